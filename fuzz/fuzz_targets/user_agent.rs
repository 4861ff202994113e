//! The user-agent classifier on arbitrary agents: never panics, always answers.
#![no_main]

use std::sync::OnceLock;

use adtally_core::traffic::UserAgentClassifier;
use libfuzzer_sys::fuzz_target;

static CLASSIFIER: OnceLock<UserAgentClassifier> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(agent) = std::str::from_utf8(data) else { return };
    let classifier = CLASSIFIER.get_or_init(UserAgentClassifier::new);
    let _ = classifier.is_bot(agent);
    let _ = classifier.device(agent);
});
