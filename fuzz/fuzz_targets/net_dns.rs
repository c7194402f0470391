//! Feeds a DNS query, as a sandbox sends it to the host's DNS forwarder, to
//! the forwarder's refusal (`dns::refusal`: what sandboxes that may not
//! resolve get back, over UDP and TCP), which parses the query with
//! hickory-proto and builds the answer.
//!
//! Beyond "no panic": an answer is a parseable DNS response with the query's
//! id, op code and questions and code REFUSED, small enough for the TCP
//! length prefix; a query that does not parse gets no answer.

#![no_main]

use hickory_proto::op::{Message, MessageType, ResponseCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|query: &[u8]| {
    let parsed = Message::from_vec(query).ok();
    match sandbar_net::fuzzing::dns_refusal(query) {
        Some(answer) => {
            let parsed = parsed.expect("answered a query that does not parse");
            assert!(answer.len() <= usize::from(u16::MAX));
            let answer = Message::from_vec(&answer).expect("the answer parses");
            assert_eq!(answer.id(), parsed.id());
            assert_eq!(answer.op_code(), parsed.op_code());
            assert_eq!(answer.message_type(), MessageType::Response);
            assert_eq!(answer.response_code(), ResponseCode::Refused);
            assert_eq!(answer.queries(), parsed.queries());
        }
        None => {}
    }
});
