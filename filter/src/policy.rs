//! What a request requires and how the gate picks it: named requirements (as Envoy jwt_authn's
//! `requirement_map`), chosen by the Envoy route (its metadata or its name), by rules on host,
//! path and method, or by default; their mode (`enforce` or `report`); CORS for the filter's own
//! replies; and the RFC 9728 metadata documents the filter serves.
//!
//! Parsed from the plugin configuration by [`crate::config::Config::parse`]; every error names
//! its field.

use std::collections::BTreeMap;

use keybound_core::Error;
use keybound_core::htu::Origin;
use keybound_core::qc::PspRole;
use keybound_core::request::AcceptedBinding;
use serde::Deserialize;

fn err(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

/// How a requirement acts on its decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Refusals are sent to the client (default).
    #[default]
    Enforce,
    /// Everything is decided, counted and logged as in `enforce`, but the request is forwarded,
    /// marked with the decision it would have had: for a safe rollout.
    Report,
}

impl Mode {
    /// `enforce` or `report`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        }
    }

    /// The global `mode` (default `enforce`).
    pub(crate) fn parse_global(s: Option<&str>) -> Result<Mode, Error> {
        Mode::parse(s, Mode::Enforce, "mode")
    }

    fn parse(s: Option<&str>, default: Mode, field: &str) -> Result<Mode, Error> {
        match s {
            None => Ok(default),
            Some("enforce") => Ok(Mode::Enforce),
            Some("report") => Ok(Mode::Report),
            Some(other) => Err(err(field, format!("{other:?}: expected \"enforce\" or \"report\""))),
        }
    }
}

/// An issuer a requirement trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerRef {
    /// `issuers[i]` of the configuration (JWTs).
    Jwt(usize),
    /// The introspection endpoint's issuer (opaque tokens).
    Introspection,
}

/// What a request needs to pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Its name, for metrics, logs and filter state: the key in `requirements`, `rule_<i>` for a
    /// rule's own, `default` for what no route or rule chose, `none` for `auth: "none"`.
    pub name: String,
    /// No credential is checked (`disabled: true`, or a rule's `auth: "none"`).
    pub disabled: bool,
    /// The issuers whose tokens it takes (`None`: every configured issuer).
    pub issuers: Option<Vec<IssuerRef>>,
    /// The bindings it takes.
    pub binding: AcceptedBinding,
    /// Scopes the token must have.
    pub scopes: Vec<String>,
    /// Whether unbound bearer tokens are accepted.
    pub allow_bearer: bool,
    /// A request without any credential (no `Authorization` with the `Bearer` or `DPoP` scheme,
    /// no `DPoP` header) is forwarded without claims; a credential that is present must be
    /// valid (jwt_authn's `allow_missing`).
    pub allow_missing: bool,
    /// Enforce or report.
    pub mode: Mode,
    /// RFC 9396 `authorization_details` types the token must carry, one entry of each.
    pub authorization_details_types: Vec<String>,
    /// PSD2 roles the client certificate must carry (ETSI TS 119 495 QCStatements).
    pub psd2_roles: Vec<PspRole>,
}

impl Requirement {
    /// A bound token, no scopes: what a request needs when nothing else is configured.
    pub fn bound_token(name: &str, mode: Mode) -> Requirement {
        Requirement {
            name: name.to_owned(),
            disabled: false,
            issuers: None,
            binding: AcceptedBinding::Any,
            scopes: Vec::new(),
            allow_bearer: false,
            allow_missing: false,
            mode,
            authorization_details_types: Vec::new(),
            psd2_roles: Vec::new(),
        }
    }

    /// Whether a token from `issuer` is taken.
    pub fn trusts(&self, issuer: IssuerRef) -> bool {
        self.issuers.as_ref().is_none_or(|set| set.contains(&issuer))
    }
}

/// The fields a requirement has, in `requirements.<name>` and in a rule.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequirement {
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    issuers: Option<Vec<String>>,
    #[serde(default)]
    binding: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    allow_bearer: bool,
    #[serde(default)]
    allow_missing: bool,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    authorization_details_types: Vec<String>,
    #[serde(default)]
    psd2_roles: Vec<String>,
}

/// What the parser of a requirement needs to know of the rest of the configuration.
pub(crate) struct Known<'a> {
    /// `issuers[].issuer`, in order.
    pub issuers: Vec<&'a str>,
    /// `introspection.issuer`, if introspection is configured.
    pub introspection: Option<&'a str>,
    /// The global `mode`.
    pub mode: Mode,
    /// Whether client certificates are read (`mtls` is configured).
    pub certificates: bool,
}

impl RawRequirement {
    /// A rule's requirement fields.
    pub(crate) fn from_rule_fields(
        issuers: Option<Vec<String>>,
        binding: Option<String>,
        scopes: Vec<String>,
        allow_bearer: bool,
        allow_missing: bool,
        mode: Option<String>,
    ) -> RawRequirement {
        RawRequirement {
            disabled: false,
            issuers,
            binding,
            scopes,
            allow_bearer,
            allow_missing,
            mode,
            authorization_details_types: Vec::new(),
            psd2_roles: Vec::new(),
        }
    }

    /// Whether no field is set.
    pub(crate) fn is_empty(&self) -> bool {
        !self.disabled
            && self.issuers.is_none()
            && self.binding.is_none()
            && self.scopes.is_empty()
            && !self.allow_bearer
            && !self.allow_missing
            && self.mode.is_none()
            && self.authorization_details_types.is_empty()
            && self.psd2_roles.is_empty()
    }

    /// A rule's own requirement, from its fields (`auth` is `"token"` or `"none"`).
    pub(crate) fn of_rule(
        auth: Option<&str>,
        fields: RawRequirement,
        name: String,
        known: &Known<'_>,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Requirement, Error> {
        match auth {
            None | Some("token") => fields.into_requirement(name, known, field),
            Some("none") => {
                let default = RawRequirement::default();
                if fields.issuers.is_some()
                    || fields.binding.is_some()
                    || !fields.scopes.is_empty()
                    || fields.allow_bearer
                    || fields.allow_missing
                    || fields.disabled
                {
                    return Err(err(
                        field("auth"),
                        "\"none\" takes no scopes, allow_bearer, allow_missing, binding, issuers or disabled",
                    ));
                }
                let mut r = RawRequirement {
                    disabled: true,
                    mode: fields.mode,
                    ..default
                }
                .into_requirement(name, known, field)?;
                "none".clone_into(&mut r.name);
                Ok(r)
            }
            Some(other) => Err(err(field("auth"), format!("{other:?}: expected \"token\" or \"none\""))),
        }
    }

    pub(crate) fn into_requirement(
        self,
        name: String,
        known: &Known<'_>,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Requirement, Error> {
        let binding = match self.binding.as_deref() {
            None | Some("any") => AcceptedBinding::Any,
            Some("dpop") => AcceptedBinding::Dpop,
            Some("mtls") => AcceptedBinding::Certificate,
            Some(other) => {
                return Err(err(
                    field("binding"),
                    format!("{other:?}: expected \"any\", \"dpop\" or \"mtls\""),
                ));
            }
        };
        if self.allow_bearer && binding != AcceptedBinding::Any {
            return Err(err(
                field("allow_bearer"),
                "contradicts binding: a bearer token has no binding",
            ));
        }
        let issuers = match self.issuers {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(err(field("issuers"), "at least one issuer (or leave it out for all)"));
            }
            Some(list) => {
                let mut refs = Vec::new();
                for (i, iss) in list.iter().enumerate() {
                    let r = if let Some(n) = known.issuers.iter().position(|k| k == iss) {
                        IssuerRef::Jwt(n)
                    } else if known.introspection == Some(iss.as_str()) {
                        IssuerRef::Introspection
                    } else {
                        return Err(err(
                            field(&format!("issuers[{i}]")),
                            format!("{iss:?} is neither an issuers[].issuer nor introspection.issuer"),
                        ));
                    };
                    refs.push(r);
                }
                Some(refs)
            }
        };
        let disabled = self.disabled;
        if disabled
            && (issuers.is_some()
                || binding != AcceptedBinding::Any
                || !self.scopes.is_empty()
                || self.allow_bearer
                || self.allow_missing
                || !self.authorization_details_types.is_empty()
                || !self.psd2_roles.is_empty())
        {
            return Err(err(
                field("disabled"),
                "a disabled requirement takes no issuers, binding, scopes, allow_bearer, allow_missing, authorization_details_types or psd2_roles",
            ));
        }
        if let Some(i) = self.authorization_details_types.iter().position(String::is_empty) {
            return Err(err(
                field(&format!("authorization_details_types[{i}]")),
                "a type name is not empty",
            ));
        }
        let mut psd2_roles = Vec::new();
        for (i, name) in self.psd2_roles.iter().enumerate() {
            let role = PspRole::from_name(name).ok_or_else(|| {
                err(
                    field(&format!("psd2_roles[{i}]")),
                    format!("{name:?}: expected \"PSP_AS\", \"PSP_PI\", \"PSP_AI\" or \"PSP_IC\""),
                )
            })?;
            psd2_roles.push(role);
        }
        if !psd2_roles.is_empty() && !known.certificates {
            return Err(err(
                field("psd2_roles"),
                "needs client certificates: configure mtls (source \"connection\" or \"xfcc\")",
            ));
        }
        if let Some(s) = self.scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
            return Err(err(field("scopes"), format!("{s:?} is not a scope token")));
        }
        Ok(Requirement {
            name,
            disabled,
            issuers,
            binding,
            scopes: self.scopes,
            allow_bearer: self.allow_bearer,
            allow_missing: self.allow_missing,
            mode: Mode::parse(self.mode.as_deref(), known.mode, &field("mode"))?,
            authorization_details_types: self.authorization_details_types,
            psd2_roles,
        })
    }
}

/// A requirement name: what metrics and filter state carry, so a short, plain token.
pub(crate) fn check_name(name: &str, field: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok && !matches!(name, "default" | "none") && !name.starts_with("rule_") {
        Ok(())
    } else {
        Err(err(
            field,
            format!("{name:?}: a requirement name is 1 to 64 of [a-z0-9_-], and not \"default\", \"none\" or rule_*"),
        ))
    }
}

/// How the Envoy route picks a requirement (`routes`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoutes {
    #[serde(default)]
    metadata: bool,
    #[serde(default)]
    names: BTreeMap<String, String>,
}

/// How the Envoy route picks a requirement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Read the route's `metadata.filter_metadata.keybound.requirement` (a requirement name).
    pub metadata: bool,
    /// Route name (`xds.route_name`) to requirement index.
    pub names: BTreeMap<String, usize>,
}

impl Routes {
    /// Whether any route information is read (each read is a call into Envoy).
    pub fn used(&self) -> bool {
        self.metadata || !self.names.is_empty()
    }

    pub(crate) fn parse(raw: RawRoutes, index: &dyn Fn(&str) -> Option<usize>) -> Result<Routes, Error> {
        let mut names = BTreeMap::new();
        for (route, req) in raw.names {
            if route.is_empty() {
                return Err(err("routes.names", "a route name is empty"));
            }
            let i = index(&req).ok_or_else(|| {
                err(
                    format!("routes.names.{route}"),
                    format!("{req:?} is not one of requirements"),
                )
            })?;
            names.insert(route, i);
        }
        Ok(Routes {
            metadata: raw.metadata,
            names,
        })
    }
}

/// A host a rule matches (`rules[].hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Any host (`*`).
    Any,
    /// This host, any port (`api.example.com`).
    Host(String),
    /// This host and port (`api.example.com:8443`).
    HostPort(String),
    /// Any subdomain of this one, any port (`*.example.com` is stored as `.example.com`).
    Suffix(String),
}

impl HostPattern {
    pub(crate) fn parse(p: &str, field: &str) -> Result<HostPattern, Error> {
        let lower = p.to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'))
        };
        if lower == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(rest) = lower.strip_prefix("*.") {
            if valid(rest) && !rest.contains(':') {
                return Ok(HostPattern::Suffix(format!(".{rest}")));
            }
        } else if valid(&lower) && !lower.ends_with('.') {
            let (host, port) = split_port(&lower);
            return Ok(match port {
                Some(_) if !host.is_empty() => HostPattern::HostPort(lower),
                _ => HostPattern::Host(lower),
            });
        }
        Err(err(field, format!("{p:?}: expected a host, host:port, *.domain or *")))
    }

    /// Whether it matches `authority` (from [`normal_authority`]).
    pub fn matches(&self, authority: &str) -> bool {
        let (host, _) = split_port(authority);
        match self {
            HostPattern::Any => true,
            HostPattern::Host(h) => host == h,
            HostPattern::HostPort(hp) => authority == hp,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// `host[:port]` into host and port (IPv6 literals in brackets kept whole).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    }
}

/// A request's `:authority` as rules compare it: lower case, without a trailing dot on the
/// host (`API.example.com.:443` is `api.example.com:443`), so a spelling cannot step around a
/// host rule.
pub fn normal_authority(authority: &str) -> String {
    let lower = authority.to_ascii_lowercase();
    let (host, port) = split_port(&lower);
    let host = host.strip_suffix('.').unwrap_or(host);
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// CORS for the filter's own replies (`cors`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default = "yes")]
    bypass_preflight: bool,
    #[serde(default)]
    allow_credentials: bool,
}

impl Default for RawCors {
    fn default() -> Self {
        RawCors {
            allowed_origins: Vec::new(),
            bypass_preflight: true,
            allow_credentials: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// CORS: preflights pass to the upstream; the filter's own replies can be read by a page on an
/// allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Origins whose pages may read the filter's replies (`*`: any).
    pub allowed_origins: Vec<String>,
    /// A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is forwarded
    /// without a credential check (jwt_authn's `bypass_cors_preflight`; default true).
    pub bypass_preflight: bool,
    /// Send `Access-Control-Allow-Credentials: true` (never with `*`).
    pub allow_credentials: bool,
}

impl Cors {
    pub(crate) fn parse(raw: RawCors) -> Result<Cors, Error> {
        let mut allowed = Vec::new();
        for (i, o) in raw.allowed_origins.iter().enumerate() {
            if o == "*" {
                allowed.push(o.clone());
                continue;
            }
            let origin = Origin::parse(o).map_err(|_| {
                err(
                    format!("cors.allowed_origins[{i}]"),
                    "an origin (scheme://host[:port]) or \"*\"",
                )
            })?;
            allowed.push(origin.as_str().to_owned());
        }
        if raw.allow_credentials && allowed.iter().any(|o| o == "*") {
            return Err(err(
                "cors.allow_credentials",
                "not with \"*\" in allowed_origins (browsers refuse it)",
            ));
        }
        Ok(Cors {
            allowed_origins: allowed,
            bypass_preflight: raw.bypass_preflight,
            allow_credentials: raw.allow_credentials,
        })
    }

    /// The CORS headers for a reply of the filter to a request from `origin` (its `Origin`
    /// header), if that origin is allowed.
    pub fn reply_headers(&self, origin: &str) -> Option<Vec<(String, String)>> {
        let any = self.allowed_origins.iter().any(|o| o == "*");
        let allowed = any
            || Origin::parse(origin)
                .ok()
                .is_some_and(|o| self.allowed_origins.iter().any(|a| a == o.as_str()));
        if !allowed {
            return None;
        }
        let mut h = vec![
            (
                "access-control-allow-origin".to_owned(),
                if any { "*".to_owned() } else { origin.to_owned() },
            ),
            (
                "access-control-expose-headers".to_owned(),
                "WWW-Authenticate, DPoP-Nonce".to_owned(),
            ),
        ];
        if !any {
            h.push(("vary".to_owned(), "Origin".to_owned()));
        }
        if self.allow_credentials {
            h.push(("access-control-allow-credentials".to_owned(), "true".to_owned()));
        }
        Some(h)
    }
}

/// One resource's RFC 9728 metadata (`resource_metadata[]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResource {
    resource: String,
    authorization_servers: Vec<String>,
    #[serde(default)]
    scopes_supported: Option<Vec<String>>,
    #[serde(default)]
    resource_name: Option<String>,
    #[serde(default)]
    resource_documentation: Option<String>,
    #[serde(default)]
    dpop_bound_access_tokens_required: Option<bool>,
}

/// A protected resource's metadata (RFC 9728), served by the filter at its well-known URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceMetadata {
    /// The resource identifier (`https://api.example.com` or `https://api.example.com/v1`).
    pub resource: String,
    /// Its origin.
    pub origin: Origin,
    /// Its path (`""` for the origin itself), without a trailing `/`.
    pub path: String,
    /// Where its metadata is served: `/.well-known/oauth-protected-resource` followed by the
    /// resource's path (RFC 9728 §3.1).
    pub well_known_path: String,
    /// The metadata URL, for the `resource_metadata` parameter of challenges.
    pub url: String,
    /// The JSON document.
    pub document: String,
}

/// What the metadata documents say of the gateway as a whole.
pub(crate) struct GatewayFacts<'a> {
    /// `dpop.algs`.
    pub algs: Vec<&'a str>,
    /// Whether certificate-bound tokens are checked (`mtls` configured).
    pub mtls: bool,
    /// Whether any requirement accepts unbound bearer tokens.
    pub bearer_anywhere: bool,
}

/// The well-known path of RFC 9728 §3.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

impl ResourceMetadata {
    pub(crate) fn parse(raw: RawResource, i: usize, facts: &GatewayFacts<'_>) -> Result<ResourceMetadata, Error> {
        let f = |name: &str| format!("resource_metadata[{i}].{name}");
        let bad = || {
            err(
                f("resource"),
                "an https (or http) URL with no query or fragment, e.g. \"https://api.example.com\"",
            )
        };
        let rest = raw
            .resource
            .strip_prefix("https://")
            .or_else(|| raw.resource.strip_prefix("http://"))
            .ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(n) => rest.split_at(n),
            None => (rest, ""),
        };
        if raw.resource.contains(['?', '#']) {
            return Err(bad());
        }
        let scheme = if raw.resource.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        let origin = Origin::parse(&format!("{scheme}://{authority}")).map_err(|_| bad())?;
        let path = path.trim_end_matches('/').to_owned();
        if !path.is_empty() {
            match keybound_core::path::CanonicalPath::parse(&path) {
                Ok(c) if c.as_str() == path => {}
                _ => {
                    return Err(err(
                        f("resource"),
                        "its path must be canonical (no dot segments, //, escapes)",
                    ));
                }
            }
        }
        if raw.authorization_servers.is_empty() {
            return Err(err(f("authorization_servers"), "at least one issuer URL"));
        }
        for (n, a) in raw.authorization_servers.iter().enumerate() {
            if !a.starts_with("https://") && !a.starts_with("http://") {
                return Err(err(f(&format!("authorization_servers[{n}]")), "an http(s) URL"));
            }
        }
        let well_known_path = format!("{WELL_KNOWN}{path}");
        let url = format!("{}{}", origin.as_str(), well_known_path);
        let mut doc = serde_json::Map::new();
        doc.insert("resource".into(), raw.resource.clone().into());
        doc.insert("authorization_servers".into(), raw.authorization_servers.into());
        if let Some(s) = raw.scopes_supported {
            doc.insert("scopes_supported".into(), s.into());
        }
        doc.insert("bearer_methods_supported".into(), vec!["header"].into());
        doc.insert("dpop_signing_alg_values_supported".into(), facts.algs.clone().into());
        doc.insert(
            "dpop_bound_access_tokens_required".into(),
            raw.dpop_bound_access_tokens_required
                .unwrap_or(!facts.bearer_anywhere && !facts.mtls)
                .into(),
        );
        doc.insert("tls_client_certificate_bound_access_tokens".into(), facts.mtls.into());
        if let Some(n) = raw.resource_name {
            doc.insert("resource_name".into(), n.into());
        }
        if let Some(d) = raw.resource_documentation {
            doc.insert("resource_documentation".into(), d.into());
        }
        Ok(ResourceMetadata {
            resource: raw.resource,
            origin,
            path,
            well_known_path,
            url,
            document: serde_json::Value::Object(doc).to_string(),
        })
    }
}
