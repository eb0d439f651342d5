// Umbrella header for the beamner C++ API.
#pragma once

#include "beamner/beam.hpp"
#include "beamner/beam_update.hpp"
#include "beamner/doc.hpp"
#include "beamner/scorer.hpp"
#include "beamner/state.hpp"
#include "beamner/transition_system.hpp"
#include "beamner/types.hpp"
#include "beamner/version.hpp"
