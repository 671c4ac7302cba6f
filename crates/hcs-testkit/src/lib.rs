//! `hcs-testkit`: a scripted fake [`hcs::Driver`] for testing code built on `hcs` on any
//! machine, without Windows, administrator rights or a running HCS service, and the
//! conformance suite every driver runs.
//!
//! # Testing your own code with the fake
//!
//! Code built on `hcs` takes its driver as an `Arc<dyn hcs::Driver>`; in production that is the
//! V1 or V2 HCS driver, in tests a [`FakeDriver`]. Script what HCS answers, run the code under
//! test, deliver the notifications HCS would send, then check what the code did and what it
//! called:
//!
//! ```
//! use hcs::{Driver, NotificationKind, System};
//! use hcs_testkit::{system_exited, Answer, ExitKind, FakeDriver, Method};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! /// The code under test: starts a container and reports how it ended.
//! fn run_container(driver: Arc<dyn Driver>, id: &str) -> hcs::Result<&'static str> {
//!     let system = System::create(driver, id, r#"{"SchemaVersion":{"Major":2,"Minor":1}}"#)?;
//!     system.start()?;
//!     system.wait()?;
//!     let crashed = system.exit_status().is_some_and(|x| x.unexpected);
//!     system.close()?;
//!     Ok(if crashed { "crashed" } else { "exited" })
//! }
//!
//! // Start succeeds; 10 ms later the container crashes, reported the way this fake's API
//! // generation reports it (V1 here; `FakeDriver::with_generation` picks V2).
//! let fake = FakeDriver::new();
//! let (status, payload) = system_exited(fake.generation(), ExitKind::Unexpected);
//! fake.script(
//!     Method::StartComputeSystem,
//!     Answer::ok().then_complete(
//!         NotificationKind::SystemExited,
//!         status,
//!         Some(payload),
//!         Duration::from_millis(10),
//!     ),
//! );
//!
//! assert_eq!(run_container(fake.clone(), "web").unwrap(), "crashed");
//! assert_eq!(fake.calls_of(Method::CreateComputeSystem)[0].id.as_deref(), Some("web"));
//! fake.assert_no_leaks(); // every handle closed, every callback unregistered
//! ```
//!
//! # The fake in detail
//!
//! [`FakeDriver`] implements the driver contract in memory. Each call is recorded in a call log
//! and answered from a per-method script of [`Answer`]s, falling back to realistic defaults
//! (fresh unique handles, pids, plausible property documents). An answer can succeed, fail
//! with an HRESULT and result document, go *pending*, deliver a notification later from another
//! thread ([`Answer::then_complete`]) and block inside the driver until a [`Gate`] opens.
//! Notifications go through [`hcs::dispatch`] exactly as HCS would send them, and
//! [`FakeDriver::fire`] can also send them by hand, late callbacks after unregistration
//! included; [`FakeDriver::fire_exit`] and [`system_exited`] send `SystemExited` the way each
//! API generation does (a V2 crash is `S_OK` with the unexpected exit in the payload). The
//! fake counts every handle and registration, so a test can end with
//! [`FakeDriver::assert_no_leaks`].
//!
//! # Conformance
//!
//! [`conformance`] holds the suite every driver must pass; a driver's test file is one
//! [`conformance_tests!`] invocation per configuration.
//!
//! # The driver contract, call by call
//!
//! Script a start that goes pending and completes 10 ms later. Then drive the fake through the
//! plain driver contract and watch the completion arrive on a raw
//! [`hcs::notify::Subscription`]:
//!
//! ```
//! use hcs::notify::Subscription;
//! use hcs::{Driver, HResult, NotificationKind};
//! use hcs_testkit::{Answer, FakeDriver, Method};
//! use std::sync::{mpsc, Arc};
//! use std::time::Duration;
//!
//! let fake = FakeDriver::new();
//! fake.script(
//!     Method::StartComputeSystem,
//!     Answer::pending().then_complete(
//!         NotificationKind::SystemStartCompleted,
//!         HResult::S_OK,
//!         None,
//!         Duration::from_millis(10),
//!     ),
//! );
//!
//! // A raw listener in the notification registry, standing in for a System.
//! let (tx, rx) = mpsc::channel();
//! let sub = Subscription::new(move |kind, status, _payload| {
//!     let _ = tx.send((kind, status, std::thread::current().id()));
//! });
//!
//! // The code under test sees only `dyn Driver`.
//! let driver: Arc<dyn Driver> = fake.clone();
//! let system = driver.create_compute_system("demo", "{}", sub.context()).unwrap().value;
//! let callback = driver.register_compute_system_callback(system, sub.context()).unwrap();
//!
//! let reply = driver.start_compute_system(system, "", sub.context()).unwrap();
//! assert!(reply.pending);
//!
//! // The completion arrives from another thread.
//! let (kind, status, thread) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
//! assert_eq!(kind, NotificationKind::SystemStartCompleted);
//! assert_eq!(status, HResult::S_OK);
//! assert_ne!(thread, std::thread::current().id());
//!
//! // Default properties use the id the system was created with.
//! let props = driver.get_compute_system_properties(system, "{}").unwrap().value;
//! assert!(props.contains(r#""Id":"demo""#));
//!
//! driver.unregister_compute_system_callback(callback).unwrap();
//! driver.close_compute_system(system).unwrap();
//!
//! // A late callback after unregistration reaches nobody once the listener is gone.
//! drop(sub);
//! let ctx = fake.system_context(system.raw()).unwrap();
//! assert!(!fake.fire(ctx, NotificationKind::SystemExited, HResult::S_OK, None));
//!
//! let calls = fake.calls();
//! assert_eq!(calls[0].method, Method::CreateComputeSystem);
//! assert_eq!(calls[0].id.as_deref(), Some("demo"));
//! assert_eq!(fake.count(Method::StartComputeSystem), 1);
//! fake.assert_no_leaks();
//! ```
//!
//! # Failures and blocking calls
//!
//! ```
//! use hcs::{Driver, HResult, NotifyContext};
//! use hcs_testkit::{Answer, FakeDriver, Gate, Method};
//! use std::time::Duration;
//!
//! let fake = FakeDriver::new();
//! fake.script(
//!     Method::CreateComputeSystem,
//!     Answer::fail_with_document(HResult::HCS_E_INVALID_JSON, r#"{"ErrorEvents":[]}"#),
//! );
//! let ctx = NotifyContext::new(u64::MAX).unwrap(); // unregistered: notifications are dropped
//! let failure = fake.create_compute_system("bad", "{", ctx).unwrap_err();
//! assert_eq!(failure.code, HResult::HCS_E_INVALID_JSON);
//! assert_eq!(fake.open_handles().systems, 0); // a failed create issues no handle
//!
//! // A call that stays "inside the DLL" until the test lets it go.
//! let gate = Gate::new();
//! fake.script(Method::OpenComputeSystem, Answer::ok().blocking(gate.clone()));
//! let f2 = fake.clone();
//! let opener = std::thread::spawn(move || f2.open_compute_system("slow").unwrap().value);
//! assert!(gate.wait_entered(Duration::from_secs(5)));
//! assert_eq!(fake.open_handles().systems, 0); // not issued yet
//! gate.open();
//! let system = opener.join().unwrap();
//! fake.close_compute_system(system).unwrap();
//! fake.assert_no_leaks();
//! ```

pub mod conformance;
pub mod fake;

pub use fake::{system_exited, Answer, Call, ExitKind, FakeDriver, Gate, HandleCounts, Method};
