// Umbrella header for the beamner C++ API.
#pragma once

#include "beamner/beam.hpp"
#include "beamner/beam_update.hpp"
#include "beamner/doc.hpp"
#include "beamner/kbest_beam.hpp"
#include "beamner/normalization.hpp"
#include "beamner/scorer.hpp"
#include "beamner/span_constraints.hpp"
#include "beamner/state.hpp"
#include "beamner/step.hpp"
#include "beamner/transition_system.hpp"
#include "beamner/types.hpp"
#include "beamner/version.hpp"
