//! A correctly signed HTTP API request: the input is `METHOD\nPATH\nEXTRA_QUERY\nBODY`, and
//! the target adds `auth_key`, `auth_timestamp`, `auth_version`, `body_md5` and
//! `auth_signature`, so every input passes verification and reaches the route handlers.

#![no_main]

use crier_fuzz::{Fixture, split_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((method, path, extra_query, body)) = split_request(data) else {
        return;
    };
    let mut fixture = Fixture::with_subscribers();
    let response = fixture.api(method, path, extra_query, body);
    let outputs = fixture.drain(None);
    assert!(
        response.status == 200 || outputs.is_empty(),
        "a rejected request published"
    );

    // Only extra parameters that collide with the signing parameters, possibly behind a
    // percent escape, can make a signed request fail verification.
    let lower = extra_query.to_ascii_lowercase();
    let may_collide = lower.contains("auth") || lower.contains("body") || lower.contains('%');
    assert!(
        response.status != 401 || may_collide,
        "signed request rejected: {response:?}"
    );
    fixture.close_all();
});
