// The human-readable page of a job report: the stages as a table and, for every evaluation, a
// point on a size-vs-perplexity plot (inline SVG, no scripts, no external assets).
#pragma once

#include <string>

namespace squeeze::coordinator {

// `report_json` is the job's report.json; returns a complete HTML document.
std::string RenderReportPage(const std::string& report_json);

}  // namespace squeeze::coordinator
