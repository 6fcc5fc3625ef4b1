//! What tower-mesh reads from a certificate with x509-parser: SANs, validity, serial, names;
//! and the X.509-SVID rule that turns the URI SANs into one [`SpiffeId`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;

use super::spiffe::{SpiffeId, SpiffeIdError};

/// The parts of a certificate the mesh looks at.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    pub(crate) uris: Vec<String>,
    pub(crate) dns: Vec<String>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) serial: String,
    pub(crate) issuer: String,
    pub(crate) subject: String,
}

/// Why a certificate is not an X.509-SVID (or not a readable certificate at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// Not a DER X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    BadCertificate(String),
    /// No URI SAN at all.
    #[error(
        "certificate has no URI SAN: an X.509-SVID carries its SPIFFE ID as its one URI SAN \
         (DNS SANs: [{}])",
        .dns.join(", ")
    )]
    NoUriSan {
        /// The DNS SANs it has instead, for the message.
        dns: Vec<String>,
    },
    /// More than one URI SAN (the X.509-SVID spec allows exactly one).
    #[error("certificate has {} URI SANs ([{}]); an X.509-SVID has exactly one", .0.len(), .0.join(", "))]
    ManyUriSans(Vec<String>),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("certificate URI SAN {uri:?} is not a SPIFFE ID: {error}")]
    BadSpiffeId {
        /// The URI SAN.
        uri: String,
        /// What is wrong with it.
        error: SpiffeIdError,
    },
    /// The SPIFFE ID has no path (it names a trust domain, not a workload).
    #[error("certificate SPIFFE ID {0} has no path; a workload SVID must name a workload")]
    NoPath(SpiffeId),
}

pub(crate) fn inspect(der: &[u8]) -> Result<CertInfo, SvidError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| SvidError::BadCertificate(e.to_string()))?;
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::BadCertificate(format!("bad subjectAltName extension: {e}")))?;
    if let Some(sans) = sans {
        for name in &sans.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    let validity = cert.validity();
    let mut serial = String::new();
    for b in cert.raw_serial() {
        let _ = write!(serial, "{b:02x}");
    }
    Ok(CertInfo {
        uris,
        dns,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        serial,
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
    })
}

impl CertInfo {
    /// The X.509-SVID rule: exactly one URI SAN, a SPIFFE ID with a path.
    pub(crate) fn spiffe_id(&self) -> Result<SpiffeId, SvidError> {
        let uri = match self.uris.as_slice() {
            [] => {
                return Err(SvidError::NoUriSan {
                    dns: self.dns.clone(),
                });
            }
            [one] => one,
            many => return Err(SvidError::ManyUriSans(many.to_vec())),
        };
        let id = SpiffeId::parse(uri).map_err(|error| SvidError::BadSpiffeId {
            uri: uri.clone(),
            error,
        })?;
        if id.path().is_empty() {
            return Err(SvidError::NoPath(id));
        }
        Ok(id)
    }
}

/// Seconds since the epoch as a `SystemTime` (negative values clamp to the epoch).
pub(crate) fn system_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Seconds since the epoch of a `SystemTime` (before the epoch: 0).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 UTC (`2025-03-01T12:00:00Z`) for log lines and error messages.
pub(crate) fn fmt_time(secs: i64) -> String {
    // Howard Hinnant's civil-from-days.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3d4h`, `5m12s`: a short human duration.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_rfc3339_utc() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(fmt_time(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(fmt_time(-86_400), "1969-12-31T00:00:00Z");
        assert_eq!(fmt_duration(Duration::from_secs(59)), "59s");
        assert_eq!(
            fmt_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d4h"
        );
        assert_eq!(unix_secs(system_time(1234)), 1234);
    }

    #[test]
    fn svid_rule_wants_exactly_one_spiffe_uri_with_a_path() {
        let info = |uris: &[&str]| CertInfo {
            uris: uris.iter().map(|s| s.to_string()).collect(),
            dns: vec!["a.example".into()],
            not_before: 0,
            not_after: 0,
            serial: String::new(),
            issuer: String::new(),
            subject: String::new(),
        };
        assert!(info(&["spiffe://td/ns/a/sa/b"]).spiffe_id().is_ok());
        let e = info(&[]).spiffe_id().expect_err("no uri");
        assert!(e.to_string().contains("a.example"), "{e}");
        assert!(matches!(
            info(&["spiffe://td/a", "spiffe://td/b"]).spiffe_id(),
            Err(SvidError::ManyUriSans(_))
        ));
        assert!(matches!(
            info(&["https://td/a"]).spiffe_id(),
            Err(SvidError::BadSpiffeId { .. })
        ));
        assert!(matches!(
            info(&["spiffe://td"]).spiffe_id(),
            Err(SvidError::NoPath(_))
        ));
    }
}
