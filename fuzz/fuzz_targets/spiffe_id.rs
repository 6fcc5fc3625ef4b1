//! Arbitrary strings through the SPIFFE ID parser: never panics, and what it accepts prints
//! back to the same text, re-parses to an equal id, and keeps its parts consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_mesh::tls::{MAX_SPIFFE_ID_LEN, SpiffeId};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = SpiffeId::parse(&text) {
        assert_eq!(id.as_str(), text);
        assert!(text.len() <= MAX_SPIFFE_ID_LEN);
        assert_eq!(SpiffeId::parse(&id.to_string()).as_ref(), Ok(&id));
        assert_eq!(
            format!("spiffe://{}{}", id.trust_domain(), id.path()),
            text
        );
        assert_eq!(format!("spiffe://{}", id.principal()), text);
        assert!(!id.trust_domain().is_empty());
        assert_eq!(id.namespace().is_some(), id.service_account().is_some());
        if let (Some(ns), Some(sa)) = (id.namespace(), id.service_account()) {
            assert_eq!(id.path(), format!("/ns/{ns}/sa/{sa}"));
        }
    }
});
