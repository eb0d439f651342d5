"""Reading and writing data: CoNLL corpora, input records, JSONL output."""
