//! An HTTP API request as received: `METHOD\nPATH\nQUERY\nBODY`, fed to `Node::handle_api`
//! on a node with subscribed connections. Most inputs fail verification, but the seeds are
//! signed requests, so mutations of their bodies and parameters reach the handlers too.

#![no_main]

use crier_core::ApiRequest;
use crier_fuzz::{Fixture, UNIX_SECS, check_response, split_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((method, path, query, body)) = split_request(data) else {
        return;
    };
    let mut fixture = Fixture::with_subscribers();
    let request = ApiRequest {
        method,
        path,
        query,
        body,
    };
    let response = fixture.node.handle_api(fixture.now, UNIX_SECS, &request);
    check_response(&response);
    let outputs = fixture.drain(None);
    assert!(
        response.status == 200 || outputs.is_empty(),
        "a rejected request published"
    );
    fixture.close_all();
});
