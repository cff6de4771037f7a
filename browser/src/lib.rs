//! `keybound-browser`: DPoP keys, proofs and login for browsers (being built, see issue 5).
