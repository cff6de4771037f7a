//! One module per endpoint (the node-oidc-provider `actions/` shape): each turns an HTTP request
//! into calls on the shared modules (client authentication, proofs, the authorization request,
//! tokens, storage) and an HTTP response. Endpoints do not call each other, except that
//! revocation finds tokens as introspection does.

pub mod authorize;
pub mod discovery;
pub mod introspect;
pub mod par;
pub mod registration;
pub mod revoke;
pub mod token;
pub mod userinfo;
