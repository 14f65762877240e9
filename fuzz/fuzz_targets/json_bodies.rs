//! JSON request bodies, decoded as the body extractor does (`serde_json::from_slice`), then
//! checked as their handlers check them before anything is stored.
#![no_main]

use broker::api::compat::{PublishRequest, publish_batch};
use broker::api::insert::{InsertRequest, compact};
use broker::api::users::NewUser;
use broker::auth::{Caller, Grants};
use broker::names;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let caller = callers()[usize::from(which >> 2) % 2].clone();
    match which % 3 {
        0 => insert(body, &caller),
        1 => new_user(body),
        _ => publish(body, &caller),
    }
});

/// The open-mode caller, and a user who may write only their own channels.
fn callers() -> [Caller; 2] {
    let ada = Caller {
        user: Some("ada".into()),
        grants: Grants {
            admin: false,
            read: vec!["public".into(), "user:{user}*".into()],
            write: vec!["user:{user}*".into()],
        },
        expires_at: None,
    };
    [Caller::anonymous(), ada]
}

/// `POST /insert`.
fn insert(body: &[u8], caller: &Caller) {
    let Ok(req) = serde_json::from_slice::<InsertRequest>(body) else {
        return;
    };
    if names::check_event(&req.event).is_err() {
        return;
    }
    let channel = req
        .channel
        .unwrap_or_else(|| names::DEFAULT_CHANNEL.to_owned());
    if names::check_channel(&channel).is_err() || caller.require_write(&channel).is_err() {
        return;
    }
    let data = compact(&req.data).expect("a decoded value encodes");
    let again: serde_json::Value = serde_json::from_str(data.get()).expect("stored data is JSON");
    assert_eq!(again, req.data);
    assert!(!data.get().contains('\n'), "one line, as SSE data needs");
}

/// `POST /users` (the password bounds are the handler's: 8 to 1024 characters).
fn new_user(body: &[u8]) {
    let Ok(req) = serde_json::from_slice::<NewUser>(body) else {
        return;
    };
    if names::check_username(&req.username).is_err()
        || !(8..=1024).contains(&req.password.chars().count())
    {
        return;
    }
    let grants = Grants {
        admin: req.admin.unwrap_or(false),
        read: req.read.unwrap_or_default(),
        write: req.write.unwrap_or_default(),
    };
    let own = format!("user:{}", req.username);
    let _ = grants.can_read(Some(&req.username), &own);
    let _ = grants.can_write(Some(&req.username), &own);
}

/// `POST /publish`.
fn publish(body: &[u8], caller: &Caller) {
    let Ok(req) = serde_json::from_slice::<PublishRequest>(body) else {
        return;
    };
    let Ok(records) = publish_batch(&req, caller) else {
        return;
    };
    assert_eq!(Some(records.len()), req.events.as_array().map(Vec::len));
    for record in &records {
        assert!(names::check_event(&record.event).is_ok());
        assert!(names::check_channel(&record.channel).is_ok());
        assert!(caller.require_write(&record.channel).is_ok());
        assert!(!record.data.get().contains('\n'));
    }
}
