//! The daemon's request line decoder: bytes off the socket go through the
//! size-capped `LineDecoder` (in chunks, as reads deliver them), each line
//! through `decode_request` and its log rendering. The client's decoding of
//! the daemon's answer lines (`ServerLine::decode`) gets the same lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_proto::{decode_request, Frame, LineDecoder, ServerLine};

fuzz_target!(|data: &[u8]| {
    // First byte: the chunk size reads deliver and a small line cap, so the
    // oversized-line paths are reached with short inputs too.
    let Some((&knob, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(knob & 0x0f) + 1;
    let limit = if knob & 0x10 == 0 {
        token_proto::MAX_LINE
    } else {
        usize::from(knob >> 5) * 8 + 1
    };
    let mut decoder = LineDecoder::new(limit);
    let mut frames = Vec::new();
    for piece in data.chunks(chunk) {
        decoder.feed(piece, &mut frames);
    }
    let _ = decoder.is_mid_line();
    for frame in frames {
        match frame {
            Frame::Line(line) => {
                assert!(
                    line.len() <= limit,
                    "a line longer than the cap got through"
                );
                assert!(!line.contains(&b'\n'));
                if let Ok(request) = decode_request(&line) {
                    let _ = request.log_safe();
                    let _ = format!("{request:?}");
                }
                let _ = ServerLine::decode(&line);
            }
            Frame::TooLong => {}
        }
    }
    // The whole input as one line, as a test client would send it.
    if let Ok(request) = decode_request(data) {
        let _ = request.log_safe();
    }
});
