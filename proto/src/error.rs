//! Errors on the wire: [`ErrorDetail`] inside a gRPC status, and the reason table.
//!
//! The detail travels in the standard gRPC rich error model, so that clients in other
//! languages decode it with their gRPC library's usual helpers:
//!
//! ```text
//!   grpc-status-details-bin = google.rpc.Status {
//!       code, message,                       (the same as the status itself)
//!       details: [ google.protobuf.Any {
//!           type_url: "type.googleapis.com/strata.v1.ErrorDetail",
//!           value:    ErrorDetail (encoded) } ] }
//! ```
//!
//! [`ErrorReason::code`] and [`ErrorReason::is_retryable`] are the table `common.proto`
//! documents; a test checks the two agree.

use prost::Message;
use tonic::{Code, Status};

use crate::v1::{CallError, ErrorDetail, ErrorReason};

/// The `Any.type_url` of an [`ErrorDetail`] in a status's details.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/strata.v1.ErrorDetail";

/// `google.rpc.Status`, the message of the `grpc-status-details-bin` trailer.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

impl ErrorReason {
    /// The string the server puts in [`ErrorDetail::reason`], for example `"WRITE_CONFLICT"`.
    pub fn reason(self) -> &'static str {
        self.as_str_name()
    }

    /// The gRPC status code this reason is sent with.
    pub fn code(self) -> Code {
        use ErrorReason as R;
        match self {
            R::WriteConflict | R::TxnRolledBack | R::KeyLocked => Code::Aborted,
            R::TxnNotFound => Code::NotFound,
            R::KeyEmpty
            | R::KeyTooLarge
            | R::ValueTooLarge
            | R::BatchTooLarge
            | R::ScanLimitTooLarge
            | R::TxnTooLarge
            | R::InvalidRange
            | R::InvalidField
            | R::ReadTsInFuture => Code::InvalidArgument,
            R::TxnReadOnly | R::ReadBelowSafePoint | R::TxnNotActive | R::MembershipRefused => {
                Code::FailedPrecondition
            }
            R::ServerBusy | R::TooManyTxns | R::ResponseTooLarge => Code::ResourceExhausted,
            R::TimestampUnavailable
            | R::NotLeader
            | R::OutcomeUnknown
            | R::CatchUpTimeout
            | R::NodeRemoved => Code::Unavailable,
            R::StorageError => Code::Internal,
            R::DataCorrupted => Code::DataLoss,
            R::Unspecified => Code::Unknown,
        }
    }

    /// Whether running the same operation again may succeed (for an interactive
    /// transaction: running it again from `Begin`).
    pub fn is_retryable(self) -> bool {
        use ErrorReason as R;
        matches!(
            self,
            R::WriteConflict
                | R::TxnRolledBack
                | R::KeyLocked
                | R::ServerBusy
                | R::TooManyTxns
                | R::TimestampUnavailable
                | R::NotLeader
                | R::CatchUpTimeout
                | R::NodeRemoved
        )
    }
}

impl ErrorDetail {
    /// A detail for `reason`, with `reason` and `retryable` filled in from the table; the
    /// caller sets the fields the reason documents.
    pub fn new(reason: ErrorReason) -> ErrorDetail {
        ErrorDetail {
            reason: reason.reason().to_owned(),
            retryable: reason.is_retryable(),
            ..ErrorDetail::default()
        }
    }

    /// The reason as an enum, or `None` for a reason this build does not know.
    pub fn reason_enum(&self) -> Option<ErrorReason> {
        ErrorReason::from_str_name(&self.reason)
    }

    /// A status carrying this detail, with the code of its reason (`UNKNOWN` for a reason
    /// this build does not know).
    pub fn into_status(self, message: impl Into<String>) -> Status {
        let code = self.reason_enum().map_or(Code::Unknown, ErrorReason::code);
        self.into_status_with_code(code, message)
    }

    /// A status with `code` carrying this detail.
    pub fn into_status_with_code(self, code: Code, message: impl Into<String>) -> Status {
        let message = message.into();
        let details = RpcStatus {
            code: code as i32,
            message: message.clone(),
            details: vec![Any {
                type_url: ERROR_DETAIL_TYPE_URL.to_owned(),
                value: self.encode_to_vec(),
            }],
        };
        Status::with_details(code, message, details.encode_to_vec().into())
    }

    /// The detail a status carries, if it carries one (statuses made by gRPC itself, such
    /// as `DEADLINE_EXCEEDED`, carry none).
    pub fn from_status(status: &Status) -> Option<ErrorDetail> {
        let details = RpcStatus::decode(status.details()).ok()?;
        details
            .details
            .iter()
            .find(|any| any.type_url == ERROR_DETAIL_TYPE_URL)
            .and_then(|any| ErrorDetail::decode(any.value.as_slice()).ok())
    }
}

impl CallError {
    /// The error of a `Kv.Batch` call that failed with `status`: its code, message and
    /// detail, as the unary call would have sent them.
    pub fn from_status(status: &Status) -> CallError {
        CallError {
            code: status.code() as i32,
            message: status.message().to_owned(),
            detail: ErrorDetail::from_status(status),
        }
    }

    /// The status the unary call would have returned: same code and message, and the
    /// detail in the status details where [`ErrorDetail::from_status`] finds it.
    pub fn into_status(self) -> Status {
        // A server never sends OK here; a result that says so is not a success either.
        let code = match Code::from_i32(self.code) {
            Code::Ok => Code::Unknown,
            code => code,
        };
        match self.detail {
            Some(detail) => detail.into_status_with_code(code, self.message),
            None => Status::new(code, self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `ErrorReason`, from the proto file's own list.
    fn documented_reasons() -> Vec<(String, String)> {
        let proto = include_str!("../strata/v1/common.proto");
        let body = proto
            .split("enum ErrorReason {")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .expect("common.proto declares enum ErrorReason");
        let mut reasons = Vec::new();
        let mut first_comment: Option<String> = None;
        for line in body.lines().map(str::trim) {
            if let Some(comment) = line.strip_prefix("//") {
                first_comment.get_or_insert_with(|| comment.trim().to_owned());
            } else if let Some((name, _)) = line.split_once(" = ") {
                let doc = first_comment.take().expect("every reason is documented");
                reasons.push((name.to_owned(), doc));
            } else {
                first_comment = None;
            }
        }
        reasons
    }

    #[test]
    fn reason_table_matches_the_proto_comments() {
        let reasons = documented_reasons();
        assert_eq!(reasons.len(), 28, "ErrorReason values: {reasons:?}");
        for (name, doc) in reasons {
            let reason = ErrorReason::from_str_name(&name).expect("a generated value");
            if reason == ErrorReason::Unspecified {
                continue;
            }
            assert_eq!(reason.reason(), name);
            let code = format!("{:?}", reason.code());
            let expected = format!(
                "{}, {}",
                screaming_snake(&code),
                if reason.is_retryable() {
                    "retryable"
                } else {
                    "not retryable"
                }
            );
            assert!(
                doc.starts_with(&expected),
                "{name}: comment {doc:?} should start with {expected:?}"
            );
        }
    }

    fn screaming_snake(camel: &str) -> String {
        let mut out = String::new();
        for (i, c) in camel.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        out
    }

    #[test]
    fn details_are_a_google_rpc_status_holding_an_any() {
        let mut detail = ErrorDetail::new(ErrorReason::KeyTooLarge);
        detail.limit_name = "max_key_bytes".into();
        detail.limit = crate::limits::MAX_KEY_BYTES;
        let status = detail.clone().into_status("key of 9000 bytes");
        assert_eq!(status.code(), Code::InvalidArgument);
        let rpc = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(rpc.code, Code::InvalidArgument as i32);
        assert_eq!(rpc.message, "key of 9000 bytes");
        assert_eq!(rpc.details.len(), 1);
        assert_eq!(rpc.details[0].type_url, ERROR_DETAIL_TYPE_URL);
        assert_eq!(
            ErrorDetail::decode(rpc.details[0].value.as_slice()).unwrap(),
            detail
        );
    }

    #[test]
    fn statuses_without_a_detail_give_none() {
        assert_eq!(
            ErrorDetail::from_status(&Status::deadline_exceeded("late")),
            None
        );
        let garbage = Status::with_details(Code::Internal, "x", vec![0xff, 0xff].into());
        assert_eq!(ErrorDetail::from_status(&garbage), None);
    }

    #[test]
    fn a_call_error_is_the_status_it_came_from() {
        let mut detail = ErrorDetail::new(ErrorReason::NotLeader);
        detail.leader_node_id = 2;
        let status = detail.clone().into_status("not the leader");
        let back = CallError::from_status(&status).into_status();
        assert_eq!(back.code(), Code::Unavailable);
        assert_eq!(back.message(), "not the leader");
        assert_eq!(ErrorDetail::from_status(&back), Some(detail));

        let plain = CallError::from_status(&Status::deadline_exceeded("late"));
        assert_eq!(plain.detail, None);
        let back = plain.into_status();
        assert_eq!(
            (back.code(), back.message()),
            (Code::DeadlineExceeded, "late")
        );
        assert_eq!(ErrorDetail::from_status(&back), None);

        let odd = CallError {
            code: 0,
            message: "?".into(),
            detail: None,
        };
        assert_eq!(odd.into_status().code(), Code::Unknown);
    }
}
