// The loss curve as an SVG picture: training loss per logged step, eval loss as points.
#pragma once

#include <string>

#include "io/json_file.h"

namespace loratune {

// Reads "loss" and "eval_loss" records (with "step") from an HF-style log_history array.
void write_loss_plot(const std::string& path, const Json& log_history);

}  // namespace loratune
