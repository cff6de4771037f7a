//! Randomness from the operating system (`getrandom`), the only source the server uses.

/// `N` random bytes.
///
/// # Errors
/// If the OS random source fails (then nothing secret may be made; the caller fails the request).
pub fn bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)?;
    Ok(out)
}

/// A random identifier or secret: 32 random bytes as base64url (43 characters, 256 bits).
///
/// # Errors
/// As [`bytes`].
pub fn token() -> Result<String, getrandom::Error> {
    Ok(keybound_core::b64::encode(&bytes::<32>()?))
}

/// The current Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
