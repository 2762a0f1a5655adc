// Early returns for absl::Status and absl::StatusOr, so that error paths read as one line.
//   SQ_RETURN_IF_ERROR(store.Put(uri, bytes));
//   SQ_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SQ_STATUS_CONCAT_INNER(a, b) a##b
#define SQ_STATUS_CONCAT(a, b) SQ_STATUS_CONCAT_INNER(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define SQ_RETURN_IF_ERROR(expr)                                                 \
  do {                                                                           \
    if (::absl::Status sq_status_ = (expr); !sq_status_.ok()) return sq_status_; \
  } while (0)

// Evaluates `expr` (a StatusOr); returns its status when not OK, else moves its value into `lhs`
// (a declaration or an lvalue).
#define SQ_ASSIGN_OR_RETURN(lhs, expr) \
  SQ_ASSIGN_OR_RETURN_IMPL(SQ_STATUS_CONCAT(sq_statusor_, __LINE__), lhs, expr)
#define SQ_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                             \
  if (!statusor.ok()) return statusor.status();       \
  lhs = *std::move(statusor)
