//! Raw bytes as one WebSocket frame: `ClientFrame::parse`, then `Node::handle_text` on a
//! connection subscribed to a public, a private and a presence channel, with a second
//! subscriber on each so that relayed client events produce output. Bytes that are not
//! UTF-8 go to `handle_binary`, as a host would pass a binary frame.

#![no_main]

use crier_core::{ClientFrame, Output};
use crier_fuzz::Fixture;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut fixture = Fixture::with_subscribers();
    let sender = fixture.issued[0];
    let Ok(text) = std::str::from_utf8(data) else {
        fixture.node.handle_binary(fixture.now, sender, data.len());
        fixture.drain(None);
        fixture.close_all();
        return;
    };

    let parsed = ClientFrame::parse(text);
    if let Err(error) = &parsed {
        assert_eq!(
            error.close_code(),
            None,
            "a parse error never closes: {error}"
        );
    }
    fixture.node.handle_text(fixture.now, sender, text);
    let outputs = fixture.drain(None);

    // A frame that does not parse gets exactly one `pusher:error`, to its sender.
    if parsed.is_err() && text.len() <= fixture.node.config().limits.max_frame_bytes {
        assert_eq!(outputs.len(), 1, "{outputs:?}");
        let Output::Send { connection, frame } = &outputs[0] else {
            panic!("expected a pusher:error frame, got {outputs:?}");
        };
        assert_eq!(*connection, sender);
        assert!(frame.starts_with(r#"{"event":"pusher:error""#), "{frame}");
    }
    // Nothing a client sends reaches a socket outside the sender's channels, and the sender
    // never hears its own client event.
    if let Ok(ClientFrame::ClientEvent { .. }) = parsed {
        for output in &outputs {
            if let Output::Send { connection, frame } = output {
                let own_event = *connection == sender && !frame.contains("pusher:error");
                assert!(!own_event, "client event echoed to its sender: {frame}");
            }
        }
    }
    fixture.close_all();
});
