//! Our bindings for the part of Envoy's dynamic-module C ABI this module uses
//! (`source/extensions/dynamic_modules/abi/abi.h` in envoyproxy/envoy), and the event hooks
//! Envoy calls. The only `unsafe` of the crate is here.
//!
//! Types: C enums are `int` (passed as `u32`); `envoy_dynamic_module_type_{envoy,module}_buffer`
//! is `{ const char* ptr; size_t length; }` passed by value; headers are
//! `{ key_ptr, key_length, value_ptr, value_length }`.
//!
//! Every callback imported below is checked by name against the `nm -D` table of the Envoy the
//! project installs (tests/tests/module.rs), and the module is linked with `-z now`, so a
//! missing one fails the load with "undefined symbol", never a call at runtime. The signatures
//! follow the ABI header (v0.2.0-era `abi.h`: buffers by value, `get_attribute_string` and
//! `get_metadata_string` filling an `envoy_buffer*`, callouts returning their id through a
//! `uint64_t*`); `http_filter_config_increment_counter`, absent from the header versions we could
//! read, was read from the installed Envoy's machine code (`objdump -d`: the same argument
//! registers as `http_filter_increment_counter`: pointer, id, label values, their count, value).
//! Attribute ids are positions in `envoy_dynamic_module_type_attribute_id`; the e2e tests that
//! read them (client certificate digest and URI SAN, route name) fail if one is off.
#![allow(
    unsafe_code,
    reason = "the C ABI of Envoy's dynamic modules; each block has a SAFETY comment"
)]

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use keybound_filter::adapter::{self, Property};
use keybound_filter::gate::{DecisionLog, Fetch, Gate, HttpCall};
use keybound_filter::metrics::LABELS;

use crate::{ABI_VERSION, Action, COUNTERS, DECISION_COUNTER, Host, Level, ModuleConfig, Stream};

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    ptr: *const c_char,
    length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

impl ModuleBuffer {
    fn of(s: &[u8]) -> Self {
        ModuleBuffer {
            ptr: s.as_ptr().cast(),
            length: s.len(),
        }
    }

    /// The null buffer (for `set_header`: remove the header; for `details`: none).
    fn null() -> Self {
        ModuleBuffer {
            ptr: ptr::null(),
            length: 0,
        }
    }
}

impl EnvoyBuffer {
    /// The bytes, valid for as long as Envoy keeps them (the current event hook).
    ///
    /// # Safety
    /// `ptr` must be null or point to `length` readable bytes that outlive `'a`.
    unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            // SAFETY: non-null, and the caller vouches for `length` bytes living for `'a`.
            unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.length) }
        }
    }
}

impl EnvoyHeader {
    /// The name and the value.
    ///
    /// # Safety
    /// Envoy filled this header in the current event hook: both buffers outlive `'a`.
    unsafe fn bytes<'a>(&self) -> (&'a [u8], &'a [u8]) {
        let (k, v) = (
            EnvoyBuffer {
                ptr: self.key_ptr,
                length: self.key_length,
            },
            EnvoyBuffer {
                ptr: self.value_ptr,
                length: self.value_length,
            },
        );
        // SAFETY: per the function's contract.
        unsafe { (k.bytes(), v.bytes()) }
    }
}

// `envoy_dynamic_module_type_http_header_type`.
const REQUEST_HEADER: u32 = 0;
const RESPONSE_HEADER: u32 = 2;

// `envoy_dynamic_module_type_log_level`: Trace, Debug, Info, Warn, Error, Critical, Off.
fn level(l: Level) -> u32 {
    match l {
        Level::Debug => 1,
        Level::Info => 2,
        Level::Warn => 3,
        Level::Critical => 5,
    }
}

// `envoy_dynamic_module_type_on_http_filter_*_status`: Continue = 0, StopIteration = 1.
const CONTINUE: u32 = 0;
const STOP_ITERATION: u32 = 1;

// `envoy_dynamic_module_type_metrics_result`: Success = 0.
const METRICS_SUCCESS: u32 = 0;

unsafe extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config_envoy: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_get_headers_size(filter_envoy: *mut c_void, header_type: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter_envoy: *mut c_void,
        header_type: u32,
        result_headers: *mut EnvoyHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy: *mut c_void,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy: *mut c_void,
        status_code: u32,
        headers: *const ModuleHeader,
        headers_length: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
}

unsafe extern "C" {
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter_envoy: *mut c_void,
        attribute_id: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter_envoy: *mut c_void,
        source: u32,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter_envoy: *mut c_void,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter_envoy: *mut c_void,
        callout_id: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter_envoy: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config_envoy: *mut c_void,
        callout_id: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config_envoy: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy: *mut c_void) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: *mut c_void, event_id: u64);
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);
}

// `envoy_dynamic_module_type_attribute_id` (in the header's order; checked against Envoy by the
// mTLS, XFCC and route tests, which fail if an id reads another attribute).
const ATTR_CONNECTION_URI_SAN_PEER_CERTIFICATE: u32 = 37;
const ATTR_CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST: u32 = 38;
const ATTR_XDS_ROUTE_NAME: u32 = 61;

// `envoy_dynamic_module_type_metadata_source_Route`.
const METADATA_ROUTE: u32 = 1;

// `envoy_dynamic_module_type_http_callout_init_result_Success` and
// `envoy_dynamic_module_type_http_callout_result_Success`.
const CALLOUT_INIT_SUCCESS: u32 = 0;
const CALLOUT_SUCCESS: u32 = 0;

/// The names of `envoy_dynamic_module_type_http_callout_init_result`, for the log.
fn callout_init_error(r: u32) -> &'static str {
    match r {
        1 => "MissingRequiredHeaders",
        2 => "ClusterNotFound",
        3 => "DuplicateCalloutId",
        4 => "CannotCreateRequest",
        _ => "unknown",
    }
}

fn log(l: Level, message: &str) {
    // SAFETY: the buffer points into `message`, alive for the call; Envoy copies it.
    unsafe { envoy_dynamic_module_callback_log(level(l), ModuleBuffer::of(message.as_bytes())) }
}

/// A loaded configuration and the ids of its counters.
struct Loaded {
    config: ModuleConfig,
    counters: HashMap<&'static str, usize>,
    decisions: Option<usize>,
    /// Envoy's configuration object (for background callouts and counters on the main thread).
    config_envoy: *mut c_void,
    /// The background JWKS refresh, when an issuer has a `jwks_uri`.
    timer: Option<Timer>,
    /// Background fetches in flight from the main thread, by callout id.
    background: Mutex<HashMap<u64, Fetch>>,
}

/// Envoy's configuration scheduler, whose `commit` posts an event to the main thread.
struct Scheduler(*mut c_void);

// SAFETY: `envoy_dynamic_module_callback_http_filter_config_scheduler_commit` posts to the main
// thread's dispatcher, which is thread-safe; the pointer is deleted only after the timer thread
// that uses it has been joined (`Timer::stop`).
unsafe impl Send for Scheduler {}

/// A thread that posts a tick to the main thread every [`TICK`], like the wasm filter's
/// `on_tick`: there the main thread refreshes JWKS that are due.
struct Timer {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Scheduler>>,
}

/// The background tick period (the wasm filter's tick period).
const TICK: Duration = Duration::from_millis(500);

impl Timer {
    fn start(config_envoy: *mut c_void) -> Option<Timer> {
        // SAFETY: Envoy's live configuration pointer, on the main thread inside config_new.
        let scheduler =
            Scheduler(unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy) });
        if scheduler.0.is_null() {
            return None;
        }
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("keybound-jwks".into())
            .spawn(move || {
                let scheduler = scheduler;
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(TICK);
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    // SAFETY: the scheduler lives until this thread is joined (`Timer::stop`).
                    unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler.0, 0) };
                }
                scheduler
            })
            .ok()?;
        Some(Timer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread, then deletes the scheduler (on the main thread, in config_destroy).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            if let Ok(scheduler) = t.join() {
                // SAFETY: made by scheduler_new, no longer used by the joined thread.
                unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler.0) };
            }
        }
    }
}

impl Loaded {
    /// Increments one of [`COUNTERS`] from the main thread.
    fn count_on_main(&self, name: &str) {
        if let Some(id) = self.counters.get(name) {
            // SAFETY: Envoy's live configuration pointer; no labels, as defined.
            unsafe {
                envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    self.config_envoy,
                    *id,
                    ptr::null(),
                    0,
                    1,
                );
            }
        }
    }
}

/// The per-request object handed to Envoy.
struct Filter {
    loaded: *const Loaded,
    stream: Stream,
}

/// The [`Host`] of one event: the Envoy filter pointer and the configuration's counters.
struct Envoy<'a> {
    filter: *mut c_void,
    loaded: &'a Loaded,
}

/// Module-owned headers in the ABI's layout, pointing into `headers`.
fn module_headers<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> Vec<ModuleHeader> {
    headers
        .iter()
        .map(|(k, v)| ModuleHeader {
            key_ptr: k.as_ref().as_ptr().cast(),
            key_length: k.as_ref().len(),
            value_ptr: v.as_ref().as_ptr().cast(),
            value_length: v.as_ref().len(),
        })
        .collect()
}

/// Envoy's bytes as an owned string: valid UTF-8 (every header Envoy's codecs accept but
/// obs-text) is copied as is, the rest converted lossily; names are lower-cased (they already
/// are from Envoy's HTTP/1 and HTTP/2 codecs, so this is a check, not a copy).
fn owned(bytes: &[u8], lower: bool) -> String {
    let mut s = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    if lower && s.bytes().any(|b| b.is_ascii_uppercase()) {
        s.make_ascii_lowercase();
    }
    s
}

/// Envoy's buffer as a string (lossy), if the call succeeded.
///
/// # Safety
/// `buf` was filled by Envoy in this event hook.
unsafe fn envoy_string(ok: bool, buf: EnvoyBuffer) -> Option<String> {
    // SAFETY: per the function's contract.
    ok.then(|| String::from_utf8_lossy(unsafe { buf.bytes() }).into_owned())
        .filter(|s| !s.is_empty())
}

impl Envoy<'_> {
    fn count_id(&self, id: usize, labels: &[ModuleBuffer]) {
        // SAFETY: live filter pointer of a filter made from the configuration that defined `id`;
        // as many label values as the definition has names, alive for the call.
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.filter,
                id,
                if labels.is_empty() {
                    ptr::null()
                } else {
                    labels.as_ptr()
                },
                labels.len(),
                1,
            );
        }
    }
}

impl Host for Envoy<'_> {
    fn request_headers(&self) -> Vec<(String, String)> {
        // SAFETY: `filter` is the live filter pointer of the current event hook.
        let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.filter, REQUEST_HEADER) };
        let mut raw = vec![
            EnvoyHeader {
                key_ptr: ptr::null(),
                key_length: 0,
                value_ptr: ptr::null(),
                value_length: 0,
            };
            n
        ];
        // SAFETY: `raw` has room for the `n` headers Envoy just counted; Envoy fills it with
        // pointers into its header map, valid until the end of this hook or a header change, and
        // we copy them out below before changing anything.
        let ok =
            unsafe { envoy_dynamic_module_callback_http_get_headers(self.filter, REQUEST_HEADER, raw.as_mut_ptr()) };
        if !ok {
            return Vec::new();
        }
        raw.iter()
            .map(|h| {
                // SAFETY: as above: Envoy's buffers, alive for this hook.
                let (k, v) = unsafe { h.bytes() };
                (owned(k, true), owned(v, false))
            })
            .collect()
    }

    fn property(&self, property: Property) -> Option<String> {
        let mut buf = EnvoyBuffer {
            ptr: ptr::null(),
            length: 0,
        };
        let attribute = match property {
            Property::PeerCertDigest => ATTR_CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST,
            Property::PeerUriSan => ATTR_CONNECTION_URI_SAN_PEER_CERTIFICATE,
            Property::RouteName => ATTR_XDS_ROUTE_NAME,
            Property::RouteRequirement => {
                // SAFETY: live filter pointer; the buffers point into static strings; Envoy
                // fills `buf` with a pointer into the route's metadata, alive for this hook.
                let ok = unsafe {
                    envoy_dynamic_module_callback_http_get_metadata_string(
                        self.filter,
                        METADATA_ROUTE,
                        ModuleBuffer::of(b"keybound"),
                        ModuleBuffer::of(b"requirement"),
                        &mut buf,
                    )
                };
                // SAFETY: filled by Envoy just now.
                return unsafe { envoy_string(ok, buf) };
            }
        };
        // SAFETY: live filter pointer; Envoy fills `buf` with a pointer into the connection's
        // or route's data, alive for this hook.
        let ok =
            unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_string(self.filter, attribute, &mut buf) };
        // SAFETY: filled by Envoy just now.
        unsafe { envoy_string(ok, buf) }
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let value = value.map_or_else(ModuleBuffer::null, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: live filter pointer; the buffers point into `name`/`value`, alive for the call
        // (Envoy copies them); a null value removes the header.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.filter,
                REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                value,
            );
        }
    }

    fn set_response_header(&self, name: &str, value: &str) {
        // SAFETY: as `set_request_header`.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.filter,
                RESPONSE_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        let hs = module_headers(headers);
        let details = b"keybound";
        // SAFETY: live filter pointer; `hs` points into `headers`, and both, `body` and
        // `details` outlive the call (Envoy copies them into the reply).
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.filter,
                u32::from(status),
                hs.as_ptr(),
                hs.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details),
            );
        }
    }

    fn record(&self, gate: &Gate, log: &DecisionLog) {
        if let Some(id) = self.loaded.decisions {
            let labels = [
                log.decision,
                log.reason,
                gate.requirement_name(log.requirement),
                log.mode.as_str(),
            ]
            .map(|l| ModuleBuffer::of(l.as_bytes()));
            self.count_id(id, &labels);
        }
        for name in adapter::extra_counters(log) {
            self.count(name);
        }
    }

    fn count(&self, name: &'static str) {
        if let Some(id) = self.loaded.counters.get(name) {
            self.count_id(*id, &[]);
        }
    }

    fn log_enabled(&self, l: Level, _now: u64) -> bool {
        // SAFETY: a plain query.
        unsafe { envoy_dynamic_module_callback_log_enabled(level(l)) }
    }

    fn log(&self, l: Level, message: &str) {
        log(l, message);
    }

    fn set_filter_state(&self, name: &str, value: &str) {
        let key = format!("keybound.{name}");
        // SAFETY: live filter pointer; both buffers alive for the call (Envoy copies them).
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.filter,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    fn http_call(&self, call: &HttpCall<'_>) -> Result<(), String> {
        let mut hs = module_headers(&call.headers);
        let mut id = 0u64;
        // SAFETY: live filter pointer; every buffer points into `call`/`hs`, alive for the call
        // (Envoy copies them into the request); `id` is a valid out-pointer.
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
                self.filter,
                &mut id,
                ModuleBuffer::of(call.target.cluster.as_bytes()),
                hs.as_mut_ptr(),
                hs.len(),
                call.body.as_deref().map_or_else(ModuleBuffer::null, ModuleBuffer::of),
                call.target.timeout_ms,
            )
        };
        if r == CALLOUT_INIT_SUCCESS {
            Ok(())
        } else {
            Err(format!(
                "HTTP callout to cluster {:?} not sent: {}",
                call.target.cluster,
                callout_init_error(r)
            ))
        }
    }

    fn resume(&self) {
        // SAFETY: live filter pointer, its request paused in request_headers.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.filter) }
    }

    fn now(&self) -> u64 {
        adapter::unix_secs(SystemTime::now())
    }
}

/// The ABI version, NUL-terminated, for `envoy_dynamic_module_on_program_init`.
static ABI_VERSION_C: &str = "v0.2.0\0";

/// Called once when Envoy loads the module: reports the ABI version we were built for.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    debug_assert_eq!(ABI_VERSION_C.trim_end_matches('\0'), ABI_VERSION);
    ABI_VERSION_C.as_ptr().cast()
}

/// A filter configuration: parse, refuse with the field named, define the counters, start the
/// background JWKS refresh if an issuer has a `jwks_uri`.
///
/// # Safety
/// Called by Envoy on the main thread with its configuration pointer and two buffers it owns
/// for the duration of the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    // SAFETY: Envoy's buffer, valid for this call; it is parsed (copied) before we return.
    let json = unsafe { config.bytes() };
    let loaded = catch_unwind(|| crate::load_config(json));
    let config = match loaded {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            log(Level::Critical, &format!("keybound: refusing configuration: {e}"));
            return ptr::null();
        }
        Err(_) => {
            log(Level::Critical, "keybound: refusing configuration: internal error");
            return ptr::null();
        }
    };
    let define = |name: &str, labels: &[&str]| -> Option<usize> {
        let names: Vec<ModuleBuffer> = labels.iter().map(|l| ModuleBuffer::of(l.as_bytes())).collect();
        let mut id = 0usize;
        // SAFETY: Envoy's live configuration pointer (we are inside config_new, before stat
        // creation is frozen); the buffers point into `name` and `labels`, alive for the call;
        // `id` is a valid out-pointer.
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                config_envoy,
                ModuleBuffer::of(name.as_bytes()),
                if names.is_empty() { ptr::null() } else { names.as_ptr() },
                names.len(),
                &mut id,
            )
        };
        (r == METRICS_SUCCESS).then_some(id)
    };
    let counters = COUNTERS
        .iter()
        .filter_map(|n| define(n, &[]).map(|id| (*n, id)))
        .collect();
    let decisions = define(DECISION_COUNTER, &LABELS);
    log(Level::Info, &config.summary());
    let timer = if config.has_remote_keys() {
        let t = Timer::start(config_envoy);
        if t.is_none() {
            log(
                Level::Warn,
                "keybound: no background JWKS refresh (scheduler unavailable); keys are fetched on demand",
            );
        }
        t
    } else {
        None
    };
    let loaded = Box::new(Loaded {
        config,
        counters,
        decisions,
        config_envoy,
        timer,
        background: Mutex::new(HashMap::new()),
    });
    Box::into_raw(loaded).cast_const().cast()
}

/// Frees a configuration: stops its timer; worker threads free their gates for it at their next
/// request (`ModuleConfig::gate`).
///
/// # Safety
/// `config` is a pointer returned by `envoy_dynamic_module_on_http_filter_config_new`, destroyed
/// once, after every filter made from it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    if !config.is_null() {
        // SAFETY: made by `Box::into_raw` in config_new and destroyed once.
        let mut loaded = unsafe { Box::from_raw(config.cast_mut().cast::<Loaded>()) };
        if let Some(t) = loaded.timer.as_mut() {
            t.stop();
        }
        drop(loaded);
    }
}

/// The timer's tick, on the main thread: background JWKS fetches that are due.
///
/// # Safety
/// Envoy's configuration pointer and ours, alive (Envoy drops events of a destroyed
/// configuration).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: *mut c_void,
    config: *const c_void,
    _event_id: u64,
) {
    // SAFETY: per this hook's contract.
    let Some(loaded) = (unsafe { config.cast::<Loaded>().as_ref() }) else {
        return;
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let now = adapter::unix_secs(SystemTime::now());
        let fetches = match loaded.config.background_fetches(now) {
            Ok(f) => f,
            Err(e) => {
                log(Level::Critical, &format!("keybound: {e}"));
                return;
            }
        };
        for (fetch, call) in fetches {
            loaded.count_on_main(adapter::fetch_counter(&fetch));
            let mut hs = module_headers(&call.headers);
            let mut id = 0u64;
            // SAFETY: Envoy's live configuration pointer on the main thread; every buffer
            // points into `call`/`hs`, alive for the call; `id` is a valid out-pointer.
            let r = unsafe {
                envoy_dynamic_module_callback_http_filter_config_http_callout(
                    config_envoy,
                    &mut id,
                    ModuleBuffer::of(call.cluster.as_bytes()),
                    hs.as_mut_ptr(),
                    hs.len(),
                    if call.body.is_empty() {
                        ModuleBuffer::null()
                    } else {
                        ModuleBuffer::of(&call.body)
                    },
                    call.timeout_ms,
                )
            };
            if r == CALLOUT_INIT_SUCCESS {
                if let Ok(mut b) = loaded.background.lock() {
                    b.insert(id, fetch);
                }
            } else {
                let report = loaded.config.background_answer(&fetch, None, b"", now);
                if let Some(c) = report.counter {
                    loaded.count_on_main(c);
                }
                log(
                    Level::Warn,
                    &format!(
                        "keybound: JWKS fetch not sent to cluster {:?}: {}",
                        call.cluster,
                        callout_init_error(r)
                    ),
                );
            }
        }
    }));
}

/// The `:status` and the body of a callout's answer.
///
/// # Safety
/// Envoy's arrays of `headers_size` headers and `chunks_size` buffers (or null), alive for the
/// current hook.
unsafe fn answer(
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) -> (Option<u16>, Vec<u8>) {
    if result != CALLOUT_SUCCESS {
        return (None, Vec::new());
    }
    let headers: &[EnvoyHeader] = if headers.is_null() {
        &[]
    } else {
        // SAFETY: per the function's contract.
        unsafe { std::slice::from_raw_parts(headers, headers_size) }
    };
    let status = headers.iter().find_map(|h| {
        // SAFETY: Envoy's buffers, alive for this hook.
        let (k, v) = unsafe { h.bytes() };
        (k == b":status")
            .then(|| std::str::from_utf8(v).ok()?.parse().ok())
            .flatten()
    });
    let chunks: &[EnvoyBuffer] = if chunks.is_null() {
        &[]
    } else {
        // SAFETY: per the function's contract.
        unsafe { std::slice::from_raw_parts(chunks, chunks_size) }
    };
    let mut body = Vec::new();
    for c in chunks {
        // SAFETY: Envoy's buffers, alive for this hook.
        body.extend_from_slice(unsafe { c.bytes() });
    }
    (status, body)
}

/// A background callout's answer, on the main thread: the keys are published for the workers.
///
/// # Safety
/// Envoy's pointers for this hook (see `answer`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy: *mut c_void,
    config: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) {
    // SAFETY: per this hook's contract.
    let Some(loaded) = (unsafe { config.cast::<Loaded>().as_ref() }) else {
        return;
    };
    // SAFETY: per this hook's contract.
    let (status, body) = unsafe { answer(result, headers, headers_size, chunks, chunks_size) };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(fetch) = loaded.background.lock().ok().and_then(|mut b| b.remove(&callout_id)) else {
            return;
        };
        let report = loaded
            .config
            .background_answer(&fetch, status, &body, adapter::unix_secs(SystemTime::now()));
        if let Some(c) = report.counter {
            loaded.count_on_main(c);
        }
        // SAFETY: a plain query.
        if report.level != Level::Debug || unsafe { envoy_dynamic_module_callback_log_enabled(level(Level::Debug)) } {
            log(report.level, &report.message);
        }
    }));
}

/// A filter for one HTTP stream.
///
/// # Safety
/// `config` is a live pointer from `envoy_dynamic_module_on_http_filter_config_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: *mut c_void,
) -> *const c_void {
    let filter = Box::new(Filter {
        loaded: config.cast(),
        stream: Stream::default(),
    });
    Box::into_raw(filter).cast_const().cast()
}

/// Frees a filter.
///
/// # Safety
/// `filter` is a pointer from `envoy_dynamic_module_on_http_filter_new`, destroyed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const c_void) {
    if !filter.is_null() {
        // SAFETY: made by `Box::into_raw` in filter_new and destroyed once.
        drop(unsafe { Box::from_raw(filter.cast_mut().cast::<Filter>()) });
    }
}

/// The filter and its configuration behind Envoy's pointers.
///
/// # Safety
/// `filter` comes from filter_new and is alive (Envoy calls hooks only between new and destroy,
/// on the stream's worker), and its configuration outlives it.
unsafe fn parts<'a>(filter: *const c_void) -> Option<(&'a mut Filter, &'a Loaded)> {
    // SAFETY: per the function's contract; the filter is only touched from its own worker.
    let f = unsafe { filter.cast_mut().cast::<Filter>().as_mut()? };
    // SAFETY: the configuration outlives its filters.
    let l = unsafe { f.loaded.as_ref()? };
    Some((f, l))
}

/// Fails closed after a panic, without taking Envoy down.
fn internal_error(host: &Envoy<'_>) {
    log(Level::Critical, "keybound: internal error deciding a request; refused");
    host.send_response(
        503,
        &[("content-type".to_owned(), "application/json".to_owned())],
        adapter::UNAVAILABLE,
    );
}

/// The request headers: the decision.
///
/// # Safety
/// Envoy's live filter pointer and our filter pointer for the same stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: per this hook's contract.
    let Some((f, loaded)) = (unsafe { parts(filter) }) else {
        return STOP_ITERATION;
    };
    let host = Envoy {
        filter: filter_envoy,
        loaded,
    };
    let action = catch_unwind(AssertUnwindSafe(|| {
        crate::on_request_headers(&loaded.config, &mut f.stream, &host)
    }));
    match action {
        Ok(Action::Continue) => CONTINUE,
        Ok(Action::Stop) => STOP_ITERATION,
        Err(_) => {
            internal_error(&host);
            STOP_ITERATION
        }
    }
}

/// The answer of the callout a paused request waits for: decide again, resume or refuse.
///
/// # Safety
/// Envoy's live filter pointer, our filter pointer, and Envoy's arrays for this hook.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    _callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) {
    // SAFETY: per this hook's contract.
    let Some((f, loaded)) = (unsafe { parts(filter) }) else {
        return;
    };
    // SAFETY: per this hook's contract.
    let (status, body) = unsafe { answer(result, headers, headers_size, chunks, chunks_size) };
    let host = Envoy {
        filter: filter_envoy,
        loaded,
    };
    let done = catch_unwind(AssertUnwindSafe(|| {
        crate::on_fetch_answer(&loaded.config, &mut f.stream, &host, status, &body);
    }));
    if done.is_err() {
        internal_error(&host);
    }
}

/// The response headers: a fresh nonce, if the decision made one.
///
/// # Safety
/// As `envoy_dynamic_module_on_http_filter_request_headers`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: per this hook's contract.
    if let Some((f, loaded)) = unsafe { parts(filter) } {
        let host = Envoy {
            filter: filter_envoy,
            loaded,
        };
        let _ = catch_unwind(AssertUnwindSafe(|| crate::on_response_headers(&mut f.stream, &host)));
    }
    CONTINUE
}

// The hooks Envoy 1.40 requires of every HTTP filter module; this one has nothing to do in them.

/// Request body: continue.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(_: *mut c_void, _: *const c_void, _: bool) -> u32 {
    CONTINUE
}

/// Request trailers: continue.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_: *mut c_void, _: *const c_void) -> u32 {
    CONTINUE
}

/// Response body: continue.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(_: *mut c_void, _: *const c_void, _: bool) -> u32 {
    CONTINUE
}

/// Response trailers: continue.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_: *mut c_void, _: *const c_void) -> u32 {
    CONTINUE
}

/// Stream complete: nothing to flush.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_: *mut c_void, _: *const c_void) {}

/// Streamed callout headers: none made.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: *mut EnvoyHeader,
    _: usize,
    _: bool,
) {
}

/// Streamed callout data: none made.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: *const EnvoyBuffer,
    _: usize,
    _: bool,
) {
}

/// Streamed callout trailers: none made.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: *mut EnvoyHeader,
    _: usize,
) {
}

/// Streamed callout complete: none made.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(_: *mut c_void, _: *const c_void, _: u64) {}

/// Streamed callout reset: none made.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: u32,
) {
}

/// Scheduled event: none scheduled.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_: *mut c_void, _: *const c_void, _: u64) {}

/// Downstream write buffer above its high watermark: not a terminal filter.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: *mut c_void,
    _: *const c_void,
) {
}

/// Downstream write buffer below its low watermark: not a terminal filter.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: *mut c_void,
    _: *const c_void,
) {
}
