//! Peer wire codec: `Handshake::decode` on the first 68 bytes, then
//! `MessageDecoder` fed the whole input in chunks (the first byte picks the
//! chunk size and the length limit). Every message decoded must re-encode
//! to the exact bytes it was framed from (an unknown id's payload is
//! skipped, so only its length prefix and id are compared) and decode back
//! to itself.
#![no_main]

use bytes::BytesMut;
use essaim_wire::peer::{Handshake, Message, MessageDecoder, WireError};
use libfuzzer_sys::fuzz_target;

fn reencode(msg: &Message, max_len: u32) -> BytesMut {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf);
    assert_eq!(buf.len(), msg.encoded_len());
    let mut copy = buf.clone();
    let back = MessageDecoder::new(max_len)
        .decode(&mut copy)
        .expect("a re-encoded message decodes")
        .expect("a re-encoded message is complete");
    assert_eq!(&back, msg, "round trip changed the message");
    assert!(copy.is_empty(), "re-encoding left bytes behind");
    buf
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    // Handshake: anything at most 68 bytes long.
    let head = &stream[..stream.len().min(Handshake::LEN)];
    match Handshake::decode(head) {
        Ok(hs) => assert_eq!(&hs.encode()[..], head),
        Err(WireError::Incomplete { needed }) => {
            assert_eq!(needed, Handshake::LEN - head.len());
        }
        Err(_) => {}
    }

    let chunk = usize::from(control & 0x3f) + 1;
    let max_len = match control >> 6 {
        0 => 16 * 1024 + 13,
        1 => 64 * 1024,
        2 => 300,
        _ => 1,
    };
    let mut decoder = MessageDecoder::new(max_len);
    let mut src = BytesMut::new();
    let mut fed = 0;
    let mut pos = 0;
    'feed: while fed < stream.len() {
        let end = (fed + chunk).min(stream.len());
        src.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            let before = src.len();
            match decoder.decode(&mut src) {
                Ok(Some(msg)) => {
                    let consumed = before - src.len();
                    let frame = &stream[pos..pos + consumed];
                    pos += consumed;
                    let len = u32::from_be_bytes(frame[..4].try_into().unwrap());
                    assert!(len <= max_len);
                    assert_eq!(consumed, len as usize + 4);
                    let encoded = reencode(&msg, max_len);
                    if let Message::Unknown { .. } = msg {
                        assert_eq!(encoded[4], frame[4]);
                    } else {
                        assert_eq!(&encoded[..], frame, "re-encoding differs from the frame");
                    }
                }
                Ok(None) => {
                    assert_eq!(src.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(_) => {
                    assert_eq!(src.len(), before, "an error consumed bytes");
                    break 'feed;
                }
            }
        }
    }
});
