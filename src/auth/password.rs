//! Password hashing with Argon2id (PHC strings). Both calls are CPU-heavy (and take 7 MiB) by
//! design: run them through the [`HashPool`](super::hash_pool::HashPool).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{
    self, Output, ParamsString, PasswordHash, SaltString, rand_core::OsRng,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio_util::sync::CancellationToken;

/// Argon2's working memory (7 MiB for [`params`]), kept between runs while password checks
/// keep coming: at most one per core (the [`HashPool`](super::hash_pool::HashPool) runs no
/// more at once) and at most [`MEMORY_KEPT`]. Allocated afresh for every run, the server's
/// memory jumped by the size of every concurrent check during each burst of logins, and every
/// run faulted its pages in. Kept for good, it held 7 MiB per core after the last login of a
/// burst; [`release_unused_memory`] gives back what a quiet spell left unused.
static MEMORY: Mutex<Vec<KeptMemory>> = Mutex::new(Vec::new());

/// Most working memories kept for reuse, whatever the number of cores.
const MEMORY_KEPT: usize = 4;

/// How long a kept working memory may go unused before [`release_unused_memory`] frees it.
const MEMORY_UNUSED: Duration = Duration::from_secs(10);

/// One working memory and when a run last gave it back.
struct KeptMemory {
    blocks: Vec<Block>,
    returned: Instant,
}

fn memory() -> MutexGuard<'static, Vec<KeptMemory>> {
    MEMORY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Frees the kept working memories that no run has used for `unused` (see [`MEMORY`]), and
/// returns how many were freed.
fn release_unused_memory(unused: Duration) -> usize {
    let released = take_unused(&mut memory(), Instant::now(), unused);
    // Dropped here, outside the lock: a password check need not wait for the frees.
    released.len()
}

/// Calls [`release_unused_memory`] with [`MEMORY_UNUSED`] every `period` until `shutdown`:
/// the server runs it beside its listeners.
pub async fn release_unused_memory_every(period: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let freed = release_unused_memory(MEMORY_UNUSED);
        if freed > 0 {
            tracing::debug!("freed {freed} unused Argon2 working memories");
        }
    }
}

/// Removes from `kept` the memories given back at least `unused` before `now`.
fn take_unused(kept: &mut Vec<KeptMemory>, now: Instant, unused: Duration) -> Vec<KeptMemory> {
    let (stale, fresh) = std::mem::take(kept)
        .into_iter()
        .partition(|m| now.saturating_duration_since(m.returned) >= unused);
    *kept = fresh;
    stale
}

/// The parameters of new hashes: Argon2id with 7 MiB, 5 passes, 1 lane, one of the settings
/// the OWASP password storage guidance lists as equivalent to 19 MiB and 2 passes (the
/// argon2 crate's default): about the same CPU time for far less memory, which a server
/// answering floods of logins holds once per core. Hashes made with other parameters (older
/// ones included) verify with their own.
fn params() -> Params {
    Params::new(7 * 1024, 5, 1, None).unwrap_or_default()
}

/// Runs `run` with `blocks` blocks of working memory, reused from an earlier run if one of
/// that size is free.
fn with_memory<R>(blocks: usize, run: impl FnOnce(&mut [Block]) -> R) -> R {
    let reused = memory()
        .pop()
        .map(|m| m.blocks)
        .filter(|m| m.len() == blocks);
    let mut blocks = reused.unwrap_or_else(|| vec![Block::default(); blocks]);
    let result = run(&mut blocks);
    let kept = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MEMORY_KEPT);
    let mut free = memory();
    if free.len() < kept {
        free.push(KeptMemory {
            blocks,
            returned: Instant::now(),
        });
    }
    result
}

/// Argon2 output for `password` under `argon` and `salt` (base64, as in PHC strings), of
/// `len` bytes.
fn compute(
    argon: &Argon2<'_>,
    params: &Params,
    password: &str,
    salt: password_hash::Salt<'_>,
    len: usize,
) -> password_hash::Result<Output> {
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    Output::init_with(len, |out| {
        with_memory(params.block_count(), |blocks| {
            argon.hash_password_into_with_memory(password.as_bytes(), salt, out, blocks)
        })
        .map_err(password_hash::Error::from)
    })
}

/// Hashes a password into an Argon2id PHC string with a fresh random salt.
///
/// # Errors
/// Only if the hasher rejects its input (it does not for passwords of sane length).
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    let params = params();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = compute(
        &argon,
        &params,
        password,
        salt.as_salt(),
        Params::DEFAULT_OUTPUT_LEN,
    )
    .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc` (any Argon2 variant, version and
/// parameters). A malformed hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    let check = || -> password_hash::Result<bool> {
        let parsed = PasswordHash::new(phc)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&parsed)?;
        let argon = Argon2::new(algorithm, version, params.clone());
        let computed = compute(&argon, &params, password, salt, expected.len())?;
        // `Output` compares in constant time.
        Ok(computed == expected)
    };
    check().unwrap_or(false)
}

/// A hash of a random password, verified against when a login names an unknown user so that
/// unknown users and wrong passwords take the same time.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash(&format!("{:x}", rand::random::<u128>())).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_memories_unused_long_enough_are_released() {
        let start = Instant::now();
        let kept_at = |secs| KeptMemory {
            blocks: vec![Block::default(); usize::try_from(secs).unwrap_or(0) + 1],
            returned: start + Duration::from_secs(secs),
        };
        let mut kept = vec![kept_at(0), kept_at(5), kept_at(8)];
        let now = start + Duration::from_secs(15);
        let released = take_unused(&mut kept, now, Duration::from_secs(10));
        // Given back at 0 s and 5 s: unused for 15 s and 10 s. The one of 8 s stays.
        let sizes = |v: &[KeptMemory]| v.iter().map(|m| m.blocks.len()).collect::<Vec<_>>();
        assert_eq!(sizes(&released), [1, 6]);
        assert_eq!(sizes(&kept), [9]);
        assert!(take_unused(&mut kept, now, Duration::from_secs(10)).is_empty());
        assert_eq!(take_unused(&mut kept, now, Duration::ZERO).len(), 1);
        assert!(kept.is_empty());
    }

    #[test]
    fn hash_then_verify() {
        let phc = hash("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{phc}");
        assert!(verify("correct horse", &phc));
        assert!(!verify("wrong horse", &phc));
        assert!(!verify("correct horse", "not a hash"));
    }

    #[test]
    fn agrees_with_the_argon2_crates_own_hasher() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash("tr0ub4dor").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"tr0ub4dor", &parsed)
                .is_ok()
        );
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"tr0ub4dor", &salt)
            .expect("hash")
            .to_string();
        assert!(verify("tr0ub4dor", &theirs));
        assert!(!verify("tr0ub4dor!", &theirs));
        // Other parameters (an older, cheaper hash) verify too, with memory of their size.
        let cheap = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(1024, 1, 1, None).expect("params"),
        )
        .hash_password(b"old", &salt)
        .expect("hash")
        .to_string();
        assert!(verify("old", &cheap));
        assert!(!verify("older", &cheap));
    }
}
