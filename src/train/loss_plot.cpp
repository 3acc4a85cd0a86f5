#include "train/loss_plot.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "io/atomic_file.h"

namespace loratune {

namespace {

struct Point {
  double step, loss;
};

std::vector<Point> series(const Json& log, const char* key) {
  std::vector<Point> out;
  for (const Json& r : log)
    if (r.contains(key) && r.contains("step") && r[key].is_number())
      out.push_back({r["step"].get<double>(), r[key].get<double>()});
  return out;
}

}  // namespace

void write_loss_plot(const std::string& path, const Json& log_history) {
  const std::vector<Point> train = series(log_history, "loss");
  const std::vector<Point> eval = series(log_history, "eval_loss");
  const double W = 640, H = 400, left = 60, right = 20, top = 30, bottom = 50;
  double max_step = 1, lo = 1e30, hi = -1e30;
  for (const auto* s : {&train, &eval})
    for (const Point& p : *s) {
      max_step = std::max(max_step, p.step);
      lo = std::min(lo, p.loss);
      hi = std::max(hi, p.loss);
    }
  if (lo > hi) lo = 0, hi = 1;
  if (hi - lo < 1e-9) hi = lo + 1;
  auto x = [&](double step) { return left + (W - left - right) * step / max_step; };
  auto y = [&](double loss) { return top + (H - top - bottom) * (hi - loss) / (hi - lo); };
  std::string svg;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" "
                "height=\"100%%\" fill=\"white\"/>\n",
                W, H);
  svg += buf;
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n"
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
                left, H - bottom, W - right, H - bottom, left, top, left, H - bottom);
  svg += buf;
  std::snprintf(buf, sizeof buf,
                "<text x=\"%.0f\" y=\"%.0f\">%.3f</text>\n<text x=\"%.0f\" y=\"%.0f\">%.3f</text>\n"
                "<text x=\"%.0f\" y=\"%.0f\">step %.0f</text>\n"
                "<text x=\"%.0f\" y=\"20\">loss (blue: train, red: eval)</text>\n",
                4.0, top + 4, hi, 4.0, H - bottom, lo, W - right - 60, H - bottom + 20, max_step,
                left);
  svg += buf;
  if (!train.empty()) {
    svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"";
    for (const Point& p : train) {
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", x(p.step), y(p.loss));
      svg += buf;
    }
    svg += "\"/>\n";
  }
  for (const Point& p : eval) {
    std::snprintf(buf, sizeof buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#d62728\"/>\n",
                  x(p.step), y(p.loss));
    svg += buf;
  }
  svg += "</svg>\n";
  write_file_atomic(path, svg);
}

}  // namespace loratune
