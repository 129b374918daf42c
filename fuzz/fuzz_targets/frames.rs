//! Any bytes on a stream, as the broker and the client read them: split
//! into frames, each decoded or refused with a typed error, never a panic;
//! whatever decodes re-encodes to a body that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use license_broker::proto::{decode, decode_client, encode, ClientDecoded, FrameBuf, Notice, ServerFrame};

fuzz_target!(|data: &[u8]| {
    let mut frames = FrameBuf::new();
    // Fed in two pieces, as reads split a stream anywhere.
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    frames.extend(&data[..cut]);
    frames.extend(&data[cut..]);
    while let Ok(Some(body)) = frames.next_frame() {
        if let ClientDecoded::Frame(f) = decode_client(body) {
            let mut again = Vec::new();
            encode(&f, &mut again);
            match decode_client(&again[4..]) {
                ClientDecoded::Frame(g) => assert_eq!(f, g),
                ClientDecoded::Bad { error, .. } => panic!("re-encoded {f:?} does not decode: {error}"),
            }
        }
        if let Ok(f) = decode::<ServerFrame>(body) {
            let mut again = Vec::new();
            encode(&f, &mut again);
            assert_eq!(decode::<ServerFrame>(&again[4..]).ok(), Some(f));
        }
        let _ = decode::<Notice>(body);
    }
});
