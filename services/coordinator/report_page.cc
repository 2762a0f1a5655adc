#include "services/coordinator/report_page.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace squeeze::coordinator {
namespace {

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// `fmt` is checked at compile time (absl::FormatSpec), so only literal formats reach it.
std::string Number(const nlohmann::json& r, const char* key, const absl::FormatSpec<double>& fmt,
                   double scale = 1.0) {
  return r.contains(key) && r[key].is_number() ? absl::StrFormat(fmt, r[key].get<double>() * scale)
                                               : "&ndash;";
}

// Mixed precision's widths as a heat map: a row per decoder layer, a column per linear, each
// cell coloured by its width (narrower is warmer) and labelled with it.
std::string BitsHeatMap(int stage, const nlohmann::json& bits_by_module) {
  const std::vector<std::string> linears = {
      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  std::map<int, std::map<std::string, int>> by_layer;
  const std::string prefix = "model.layers.";
  for (const auto& [module, bits] : bits_by_module.items()) {
    if (module.rfind(prefix, 0) != 0 || !bits.is_number_integer()) continue;
    const size_t dot = module.find('.', prefix.size());
    if (dot == std::string::npos) continue;
    int layer = 0;
    try {
      layer = std::stoi(module.substr(prefix.size(), dot - prefix.size()));
    } catch (const std::exception&) {
      continue;
    }
    by_layer[layer][module.substr(dot + 1)] = bits.get<int>();
  }
  if (by_layer.empty()) return "";
  auto colour = [](int bits) {
    switch (bits) {
      case 2:
        return "#d73027";
      case 3:
        return "#fc8d59";
      case 4:
        return "#fee08b";
      case 8:
        return "#91bfdb";
      default:
        return "#dddddd";
    }
  };
  std::string html =
      absl::StrCat("<h2>Bits per linear (stage ", stage,
                   ", mixed precision)</h2>\n<table class='heat'><tr><th>layer</th>");
  for (const std::string& l : linears) absl::StrAppend(&html, "<th>", Escape(l), "</th>");
  html += "</tr>\n";
  for (const auto& [layer, modules] : by_layer) {
    absl::StrAppend(&html, "<tr><td>", layer, "</td>");
    for (const std::string& l : linears) {
      auto it = modules.find(l);
      if (it == modules.end()) {
        html += "<td>&ndash;</td>";
        continue;
      }
      absl::StrAppend(&html, "<td style='background:", colour(it->second),
                      ";text-align:center' title='layer ", layer, " ", Escape(l), ": ", it->second,
                      " bits'>", it->second, "</td>");
    }
    html += "</tr>\n";
  }
  html += "</table>\n<p>";
  for (int bits : {2, 3, 4, 8})
    absl::StrAppend(&html, "<span style='background:", colour(bits), ";padding:2px 8px'>", bits,
                    " bits</span> ");
  html += "</p>\n";
  return html;
}

// Round tick values across [lo, hi]: 1, 2 or 5 times a power of ten, about `n` of them.
std::vector<double> Ticks(double lo, double hi, int n) {
  std::vector<double> out;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / n;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * power;
    if (step >= raw) break;
  }
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push_back(v);
  return out;
}

struct Point {
  double mib, ppl;
  int stage;
};

// Size against perplexity. Size starts at 0, so compression reads as a ratio; perplexity spans
// its own range (padded), since a few hundredths are what separates the stages and an axis
// from 0 would flatten them. Labels stay inside the plot.
std::string SizePerplexityPlot(const std::vector<Point>& points) {
  const double w = 560, h = 320, left = 64, right = 24, top = 16, bottom = 48;
  double max_x = 1e-9, lo_y = 1e300, hi_y = -1e300;
  for (const Point& p : points) {
    max_x = std::max(max_x, p.mib);
    lo_y = std::min(lo_y, p.ppl);
    hi_y = std::max(hi_y, p.ppl);
  }
  max_x *= 1.1;
  const double pad = std::max((hi_y - lo_y) * 0.15, std::abs(hi_y) * 0.002 + 1e-9);
  lo_y -= pad;
  hi_y += pad;
  auto px = [&](double mib) { return left + (w - left - right) * mib / max_x; };
  auto py = [&](double ppl) {
    return (h - bottom) - (h - bottom - top) * (ppl - lo_y) / (hi_y - lo_y);
  };
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' role='img' "
      "aria-label='size against perplexity' font-size='12'>\n"
      "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='black'/>"
      "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='black'/>\n"
      "<text x='%.0f' y='%.0f' text-anchor='middle'>size on disk (MiB)</text>\n"
      "<text x='14' y='%.0f' transform='rotate(-90 14 %.0f)' text-anchor='middle'>perplexity"
      "</text>\n",
      w, h, left, h - bottom, w - right, h - bottom, left, top, left, h - bottom, (w + left) / 2,
      h - 8, (h - bottom + top) / 2, (h - bottom + top) / 2);
  for (double v : Ticks(0, max_x, 5)) {
    absl::StrAppend(
        &svg, absl::StrFormat("<line x1='%.1f' y1='%.0f' x2='%.1f' y2='%.0f' "
                              "stroke='black'/><text x='%.1f' y='%.0f' "
                              "text-anchor='middle'>%g</text>\n",
                              px(v), h - bottom, px(v), h - bottom + 4, px(v), h - bottom + 18, v));
  }
  for (double v : Ticks(lo_y, hi_y, 5)) {
    absl::StrAppend(&svg, absl::StrFormat("<line x1='%.0f' y1='%.1f' x2='%.0f' y2='%.1f' "
                                          "stroke='#ddd'/><text x='%.0f' y='%.1f' "
                                          "text-anchor='end'>%g</text>\n",
                                          left, py(v), w - right, py(v), left - 6, py(v) + 4, v));
  }
  for (const Point& p : points) {
    const double x = px(p.mib), y = py(p.ppl);
    // Right of the point, or left of it near the right edge.
    const bool near_right = x > w - right - 140;
    absl::StrAppend(&svg, absl::StrFormat("<circle cx='%.1f' cy='%.1f' r='5' fill='#1f77b4'/>"
                                          "<text x='%.1f' y='%.1f' text-anchor='%s'>stage %d: "
                                          "%.4f</text>\n",
                                          x, y, near_right ? x - 8 : x + 8, y - 6,
                                          near_right ? "end" : "start", p.stage, p.ppl));
  }
  return svg + "</svg>";
}

// Perplexity by example category, a column per evaluation: where the loss went.
std::string CategoryTable(const nlohmann::json& stages) {
  std::vector<std::pair<int, const nlohmann::json*>> evaluations;
  std::map<std::string, std::map<int, double>> by_category;
  for (const auto& s : stages) {
    const auto& r = s["result"];
    if (!r.contains("categories") || !r["categories"].is_object()) continue;
    const int index = s.value("index", 0);
    evaluations.emplace_back(index, &r);
    for (const auto& [name, figure] : r["categories"].items()) {
      if (figure.contains("perplexity") && figure["perplexity"].is_number())
        by_category[name][index] = figure["perplexity"].get<double>();
    }
  }
  if (by_category.empty()) return "";
  std::string html = "<h2>Perplexity by category</h2>\n<table><tr><th>category</th>";
  for (const auto& [index, r] : evaluations) absl::StrAppend(&html, "<th>stage ", index, "</th>");
  html += "</tr>\n";
  for (const auto& [name, values] : by_category) {
    absl::StrAppend(&html, "<tr><td style='text-align:left'>", Escape(name), "</td>");
    for (const auto& [index, r] : evaluations) {
      auto it = values.find(index);
      absl::StrAppend(&html, "<td>",
                      it == values.end() ? "&ndash;" : absl::StrFormat("%.4f", it->second),
                      "</td>");
    }
    html += "</tr>\n";
  }
  return html + "</table>\n";
}

}  // namespace

std::string RenderReportPage(const std::string& report_json) {
  const auto report = nlohmann::json::parse(report_json, nullptr, false);
  if (report.is_discarded()) return "<!doctype html><p>report.json does not parse</p>";
  const std::string job = report.value("job", "");
  std::string rows, measures;
  std::vector<Point> points;
  // Generated samples by prompt: (stage, completion) in stage order, the baseline first.
  std::vector<std::pair<std::string, std::vector<std::pair<int, std::string>>>> samples;
  std::string heat_maps;
  for (const auto& s : report["stages"]) {
    const auto& r = s["result"];
    const int index = s.value("index", 0);
    const std::string kind = s.value("kind", "");
    if (r.contains("samples") && r["samples"].is_array()) {
      for (const auto& sample : r["samples"]) {
        const std::string prompt = sample.value("prompt", "");
        auto it = std::find_if(samples.begin(), samples.end(),
                               [&](const auto& p) { return p.first == prompt; });
        if (it == samples.end()) it = samples.insert(samples.end(), {prompt, {}});
        it->second.emplace_back(index, sample.value("completion", ""));
      }
    }
    std::string notes;
    if (kind == "quantize") {
      const bool mixed = r.contains("bits_by_module") && r["bits_by_module"].is_object() &&
                         !r["bits_by_module"].empty();
      const std::string width =
          mixed ? absl::StrFormat("mixed, %.2f bits on average", r.value("average_bits", 0.0))
                : absl::StrCat(r.value("bits", 0), " bits");
      notes = absl::StrFormat("%s, %s, group %d%s", r.value("method", "?"), width,
                              r.value("group_size", 0),
                              r.value("act_order", false) ? ", act_order" : "");
      if (mixed) heat_maps += BitsHeatMap(index, r["bits_by_module"]);
    }
    if (r.contains("tasks") && r["tasks"].is_object() && r["tasks"].contains("acc")) {
      absl::StrAppend(&notes, notes.empty() ? "" : "; ",
                      absl::StrFormat("task accuracy %.3f", r["tasks"].value("acc", 0.0)));
    }
    absl::StrAppend(&rows, "<tr><td>", index, "</td><td>", Escape(kind), "</td><td>",
                    Number(r, "perplexity", "%.4f"), "</td><td>",
                    Number(r, "size_bytes", "%.3f", 1.0 / 1048576), "</td><td>",
                    Number(r, "retention_percent", "%.2f%%"), "</td><td>",
                    Number(r, "tokens_per_second", "%.0f"), "</td><td style='text-align:left'>",
                    Escape(notes), "</td></tr>\n");
    if (kind == "evaluate") {
      absl::StrAppend(&measures, "<tr><td>", index, "</td><td>",
                      Number(r, "bits_per_weight", "%.3f"), "</td><td>",
                      Number(r, "compression_ratio", "%.2fx"), "</td><td>",
                      Number(r, "ms_per_token", "%.3f"), "</td><td>",
                      Number(r, "peak_host_memory_bytes", "%.1f", 1.0 / 1048576), "</td><td>",
                      Number(r, "peak_device_memory_bytes", "%.1f", 1.0 / 1048576), "</td><td>",
                      Number(r, "nonzero_parameters", "%.0f"), "</td></tr>\n");
    }
    if (r.contains("perplexity") && r.contains("size_bytes")) {
      points.push_back(
          {r["size_bytes"].get<double>() / 1048576, r["perplexity"].get<double>(), index});
    }
  }
  std::string samples_html;
  if (!samples.empty()) {
    samples_html = "<h2>Samples (greedy)</h2>\n";
    for (const auto& [prompt, by_stage] : samples) {
      absl::StrAppend(
          &samples_html, "<p><b>Prompt:</b> <code>", Escape(prompt),
          "</code></p>\n<table class='samples'><tr><th>stage</th><th>completion</th></tr>\n");
      for (size_t i = 0; i < by_stage.size(); ++i) {
        absl::StrAppend(&samples_html, "<tr><td>", by_stage[i].first, i == 0 ? " (baseline)" : "",
                        "</td><td style='text-align:left;white-space:pre-wrap'>",
                        Escape(by_stage[i].second), "</td></tr>\n");
      }
      samples_html += "</table>\n";
    }
  }
  const std::string measures_html =
      measures.empty()
          ? ""
          : absl::StrCat(
                "<h2>Size, speed and memory</h2>\n<table><tr><th>stage</th><th>bits per "
                "weight</th><th>compression</th><th>ms per token</th><th>peak host "
                "(MiB)</th><th>peak device (MiB)</th><th>nonzero parameters</th></tr>\n",
                measures, "</table>\n");
  return absl::StrCat(
      "<!doctype html>\n<html><head><meta charset='utf-8'><title>Squeeze report ", Escape(job),
      "</title>\n<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
      "margin-bottom:1em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
      "</style></head><body>\n<h1>Job ",
      Escape(job), "</h1>\n<p>Final model: <code>", Escape(report.value("model", "")),
      "</code></p>\n",
      "<table><tr><th>stage</th><th>kind</th><th>perplexity</th><th>size "
      "(MiB)</th><th>retention</th>"
      "<th>tokens/s</th><th>notes</th></tr>\n",
      rows, "</table>\n", measures_html,
      points.empty()
          ? ""
          : absl::StrCat("<h2>Size and perplexity</h2>\n", SizePerplexityPlot(points), "\n"),
      CategoryTable(report["stages"]), heat_maps, samples_html, "</body></html>\n");
}

}  // namespace squeeze::coordinator
