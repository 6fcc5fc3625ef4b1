//! Which security resources apply to a workload, and Istio's "oldest first" order.

use std::cmp::Ordering;

use crate::config::Resource;
use crate::config::common::MatchLabelsSelector;
use crate::route::SourceIdentity;

/// Whether `selector` selects `workload`: every `matchLabels` entry is one of the workload's
/// labels. An absent or empty selector selects every workload.
pub(crate) fn selects(selector: Option<&MatchLabelsSelector>, workload: &SourceIdentity) -> bool {
    selector.is_none_or(|s| {
        s.match_labels
            .iter()
            .all(|(k, v)| workload.labels.get(k) == Some(v))
    })
}

/// Whether the selector is absent or has no labels: Istio treats both as "namespace-wide".
pub(crate) fn is_namespace_wide(selector: Option<&MatchLabelsSelector>) -> bool {
    selector.is_none_or(|s| s.match_labels.is_empty())
}

/// `metadata.creationTimestamp` as seconds and nanoseconds since the Unix epoch, for Istio's
/// "oldest wins". An absent or unparsable timestamp is Kubernetes' zero time, which is older
/// than any real one (Go's `CreationTimestamp.Before` sees it that way).
pub(crate) fn creation_time(resource: &Resource) -> (i64, u32) {
    resource
        .metadata
        .creation_timestamp
        .as_deref()
        .and_then(parse_rfc3339)
        .unwrap_or((i64::MIN, 0))
}

/// Istio's `a.CreationTimestamp.Before(b.CreationTimestamp)`: strictly older. Ties are not
/// "before", so the first one in loader order stays.
pub(crate) fn older(a: &Resource, b: &Resource) -> bool {
    creation_time(a).cmp(&creation_time(b)) == Ordering::Less
}

/// Parses RFC 3339 (`2024-05-01T10:00:00Z`, `2024-05-01T10:00:00.5+02:00`) into seconds and
/// nanoseconds since the Unix epoch. `None` when malformed.
pub(crate) fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut scale = 100_000_000u32;
        for c in frac.bytes().take(digits.min(9)) {
            nanos += u32::from(c - b'0') * scale;
            scale /= 10;
        }
        rest = frac.get(digits..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some((
        days * 86_400 + hour * 3600 + minute * 60 + second - offset,
        nanos,
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps_parse_to_unix_time() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2024-05-01T10:00:00Z"),
            Some((1_714_557_600, 0))
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00.25+02:00"),
            Some((1_714_557_600, 250_000_000))
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00-00:30"),
            Some((951_784_200, 0))
        );
        for bad in [
            "",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2024-05-01T00:00:00",
            "2024-05-01T00:00:00+2",
            "2024-05-01T00:00:00.Z",
            "yesterday at noon",
            "2024-05-01T0a:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
