//! Mapping hyper's request errors to Envoy's reset reasons.

use std::error::Error as StdError;

use crate::error::{Error, ResetReason};

/// The [`ResetReason`] of a hyper error that ended a request before its response headers.
///
/// - parse errors (a malformed status line or headers, an HTTP/2 preface where HTTP/1.1 was
///   expected) → `ProtocolError` (`UPE`, 502);
/// - an HTTP/2 stream reset by the peer (`RST_STREAM`, including `REFUSED_STREAM`) →
///   `RemoteReset` (`UR`); an HTTP/2 protocol violation h2 detected → `ProtocolError`;
/// - everything else (the connection closed, an incomplete message, a canceled dispatch, an
///   I/O error, an HTTP/2 `GOAWAY`) → `ConnectionTermination` (`UC`).
///
/// The `h2` crate is not a direct dependency, so an HTTP/2 stream reset is recognised by the
/// words its error displays (`stream error received: ...`), which `h2` has kept stable.
pub(crate) fn reset_reason(err: &hyper::Error) -> ResetReason {
    if err.is_parse() || err.is_parse_status() {
        return ResetReason::ProtocolError;
    }
    let mut source: Option<&(dyn StdError + 'static)> = StdError::source(err);
    while let Some(e) = source {
        let text = e.to_string();
        if text.starts_with("stream error received") {
            return ResetReason::RemoteReset;
        }
        // h2's words for a violation it detected in the peer's frames.
        if text.starts_with("stream error detected")
            || text.starts_with("connection error detected")
        {
            return ResetReason::ProtocolError;
        }
        source = e.source();
    }
    ResetReason::ConnectionTermination
}

/// The [`Error::UpstreamReset`] for a hyper error before response headers; the transport
/// failure reason is hyper's description of it (with its cause).
pub(crate) fn upstream_reset(err: &hyper::Error) -> Error {
    let detail = match StdError::source(err) {
        Some(src) => format!("{err}: {src}"),
        None => err.to_string(),
    };
    Error::UpstreamReset {
        reason: reset_reason(err),
        transport_failure: Some(detail),
    }
}
