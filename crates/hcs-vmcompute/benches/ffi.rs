//! The V1 FFI layer's own overhead: one lifecycle (create → start → exec → process wait → exit
//! code → process close → system close, through `hcs::System`) over `VmComputeDriver` whose
//! function table is a fake `vmcompute.dll` that forwards every export to an `hcs-sim`
//! simulator, vs the same lifecycle over the same simulator used directly as the driver.
//!
//! The fake table follows `tests/fake_table.rs` (same `extern "system"` signatures, strings
//! allocated by the "DLL" and freed through `free_string`), but instead of its own small state
//! machine it forwards to the simulator, so both sides run the identical HCS model and the ratio
//! isolates UTF-16 marshalling, result-document ownership, handle guards, the notification
//! trampoline (UTF-16 payload → `hcs::dispatch`) and the fake's forwarding glue (a callback map).
//! The simulator answers every call synchronously (V1 create/start completions would go to a
//! callback not registered yet), with zero notification latency and scripted processes.
//!
//! `cargo bench -p hcs-vmcompute --bench ffi -- --quick-ratios`.
#![allow(unsafe_code)]

#[cfg(unix)]
mod imp {
    use criterion::Criterion;
    use hcs::notify::Subscription;
    use hcs::{CallbackHandle, Driver, NotifyContext, ProcessHandle, SystemHandle, Timeouts};
    use hcs_sim::{Script, ScriptedProcess, SimConfig, Simulator};
    use hcs_vmcompute::ffi::{
        self, HANDLE, HCS_CALLBACK, HCS_PROCESS, HCS_PROCESS_INFORMATION, HCS_SYSTEM, HRESULT, PCWSTR, PWSTR,
    };
    use hcs_vmcompute::table::NotificationCallback;
    use hcs_vmcompute::{VmComputeDriver, VmComputeTable};
    use std::collections::HashMap;
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    const E_NOTIMPL: HRESULT = 0x8000_4001_u32 as i32;
    const CONFIG: &str = r#"{"Owner":"bench","SchemaVersion":{"Major":2,"Minor":1},"Container":{},"ShouldTerminateOnLastHandleClosed":true}"#;
    const PARAMS: &str =
        r#"{"CommandLine":"true","CreateStdInPipe":false,"CreateStdOutPipe":false,"CreateStdErrPipe":false}"#;

    static SIM: OnceLock<Arc<Simulator>> = OnceLock::new();
    /// callback handle → the subscription forwarding the simulator's notifications to the trampoline
    static CALLBACKS: Mutex<Option<HashMap<u64, Subscription>>> = Mutex::new(None);

    fn sim() -> &'static Arc<Simulator> {
        SIM.get_or_init(|| {
            Simulator::new(
                SimConfig::default()
                    .scripted(Script::new().otherwise(ScriptedProcess::exits(0)))
                    .latency(Duration::ZERO)
                    .all_sync(),
            )
        })
    }

    fn no_ctx() -> NotifyContext {
        NotifyContext::new(u64::MAX).unwrap()
    }

    // ------------------------------------------------------------ strings owned by the "DLL"

    /// Allocates a NUL-terminated UTF-16 copy of `s`, with its length in a 4-unit header so that
    /// `fake_free` can rebuild the allocation.
    fn alloc(s: &str) -> PWSTR {
        let mut v: Vec<u16> = vec![0; 4];
        v.extend(s.encode_utf16());
        v.push(0);
        let len = v.len() as u64;
        for (i, u) in v.iter_mut().take(4).enumerate() {
            *u = (len >> (16 * i)) as u16;
        }
        let b = v.into_boxed_slice();
        // SAFETY: the boxed slice has at least 5 units; the pointer skips the header.
        unsafe { (Box::into_raw(b) as *mut u16).add(4) }
    }

    unsafe extern "system" fn fake_free(p: *mut c_void) {
        // SAFETY: `p` came from `alloc`: the header precedes it and records the slice length.
        unsafe {
            let base = (p as *mut u16).sub(4);
            let mut len = 0u64;
            for i in 0..4 {
                len |= u64::from(*base.add(i)) << (16 * i);
            }
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                base,
                len as usize,
            )));
        }
    }

    fn read(p: PCWSTR) -> String {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: the driver passes NUL-terminated strings.
        String::from_utf16(unsafe { ffi::wide_units(p) }).unwrap()
    }

    /// Converts a simulator result into an HRESULT, writing the result document if any.
    unsafe fn finish<T>(r: hcs::DriverResult<T>, result: *mut PWSTR) -> Result<T, HRESULT> {
        match r {
            Ok(reply) => {
                if let Some(doc) = reply.document {
                    // SAFETY: the driver passes a valid out-slot.
                    unsafe { *result = alloc(&doc) };
                }
                Ok(reply.value)
            }
            Err(f) => {
                if let Some(doc) = f.document {
                    // SAFETY: as above.
                    unsafe { *result = alloc(&doc) };
                }
                Err(f.code.0 as i32)
            }
        }
    }

    fn sh(p: HCS_SYSTEM) -> SystemHandle {
        SystemHandle::new(p as u64).unwrap()
    }
    fn ph(p: HCS_PROCESS) -> ProcessHandle {
        ProcessHandle::new(p as u64).unwrap()
    }

    // ------------------------------------------------------------ fake exports

    unsafe extern "system" fn enumerate(_q: PCWSTR, _s: *mut PWSTR, _r: *mut PWSTR) -> HRESULT {
        E_NOTIMPL
    }

    unsafe extern "system" fn create(
        id: PCWSTR,
        config: PCWSTR,
        _identity: HANDLE,
        system: *mut HCS_SYSTEM,
        result: *mut PWSTR,
    ) -> HRESULT {
        let r = sim().create_compute_system(&read(id), &read(config), no_ctx());
        // SAFETY: valid out-slots from the driver.
        match unsafe { finish(r, result) } {
            Ok(h) => {
                // SAFETY: as above.
                unsafe { *system = h.raw() as HCS_SYSTEM };
                0
            }
            Err(hr) => hr,
        }
    }

    unsafe extern "system" fn open(id: PCWSTR, system: *mut HCS_SYSTEM, result: *mut PWSTR) -> HRESULT {
        let r = sim().open_compute_system(&read(id));
        // SAFETY: valid out-slots from the driver.
        match unsafe { finish(r, result) } {
            Ok(h) => {
                // SAFETY: as above.
                unsafe { *system = h.raw() as HCS_SYSTEM };
                0
            }
            Err(hr) => hr,
        }
    }

    unsafe extern "system" fn close_system(system: HCS_SYSTEM) -> HRESULT {
        match sim().close_compute_system(sh(system)) {
            Ok(()) => 0,
            Err(f) => f.code.0 as i32,
        }
    }

    macro_rules! control {
        ($name:ident, |$s:ident, $o:ident| $call:expr) => {
            unsafe extern "system" fn $name(
                system: HCS_SYSTEM,
                options: PCWSTR,
                result: *mut PWSTR,
            ) -> HRESULT {
                let ($s, $o) = (sh(system), read(options));
                let r = $call;
                // SAFETY: valid out-slot from the driver.
                match unsafe { finish(r, result) } {
                    Ok(()) => 0,
                    Err(hr) => hr,
                }
            }
        };
    }
    control!(start, |s, o| sim().start_compute_system(s, &o, no_ctx()));
    control!(shutdown, |s, o| sim().shutdown_compute_system(s, &o));
    control!(terminate, |s, o| sim().terminate_compute_system(s, &o));
    control!(pause, |s, o| sim().pause_compute_system(s, &o, no_ctx()));
    control!(resume, |s, o| sim().resume_compute_system(s, &o, no_ctx()));
    control!(save, |s, o| sim().save_compute_system(s, &o, no_ctx()));
    control!(modify, |s, o| sim().modify_compute_system(s, &o));

    unsafe extern "system" fn properties(
        system: HCS_SYSTEM,
        query: PCWSTR,
        props: *mut PWSTR,
        result: *mut PWSTR,
    ) -> HRESULT {
        let r = sim().get_compute_system_properties(sh(system), &read(query));
        // SAFETY: valid out-slots from the driver.
        match unsafe { finish(r, result) } {
            Ok(p) => {
                // SAFETY: as above.
                unsafe { *props = alloc(&p) };
                0
            }
            Err(hr) => hr,
        }
    }

    /// A subscription that hands every simulator notification to the driver's trampoline with
    /// the driver's context, as the real DLL calls back.
    fn forwarder(cb: NotificationCallback, ctx: usize) -> Subscription {
        Subscription::new(move |kind, status, payload| {
            let data: Option<Vec<u16>> = payload.map(|p| p.encode_utf16().chain([0]).collect());
            let ptr = data.as_ref().map_or(std::ptr::null(), |d| d.as_ptr());
            // SAFETY: the driver's trampoline with the driver's own context; `data` outlives it.
            unsafe { cb(kind.v1_value(), ctx as *const c_void, status.0 as i32, ptr) };
        })
    }

    fn keep(h: u64, sub: Subscription) {
        CALLBACKS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(h, sub);
    }

    unsafe extern "system" fn register_system(
        handle: *mut c_void,
        cb: Option<NotificationCallback>,
        ctx: *const c_void,
        out: *mut HCS_CALLBACK,
    ) -> HRESULT {
        let sub = forwarder(cb.expect("callback"), ctx as usize);
        match sim().register_compute_system_callback(sh(handle), sub.context()) {
            Ok(h) => {
                keep(h.raw(), sub);
                // SAFETY: valid out-slot.
                unsafe { *out = h.raw() as HCS_CALLBACK };
                0
            }
            Err(f) => f.code.0 as i32,
        }
    }

    unsafe extern "system" fn register_process(
        handle: *mut c_void,
        cb: Option<NotificationCallback>,
        ctx: *const c_void,
        out: *mut HCS_CALLBACK,
    ) -> HRESULT {
        let sub = forwarder(cb.expect("callback"), ctx as usize);
        match sim().register_process_callback(ph(handle), sub.context()) {
            Ok(h) => {
                keep(h.raw(), sub);
                // SAFETY: valid out-slot.
                unsafe { *out = h.raw() as HCS_CALLBACK };
                0
            }
            Err(f) => f.code.0 as i32,
        }
    }

    fn unregister_with(
        cb: HCS_CALLBACK,
        f: impl FnOnce(CallbackHandle) -> Result<(), hcs::Failure>,
    ) -> HRESULT {
        let r = f(CallbackHandle::new(cb as u64).unwrap());
        let sub = CALLBACKS
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|m| m.remove(&(cb as u64)));
        drop(sub);
        match r {
            Ok(()) => 0,
            Err(f) => f.code.0 as i32,
        }
    }

    unsafe extern "system" fn unregister_system(cb: HCS_CALLBACK) -> HRESULT {
        unregister_with(cb, |h| sim().unregister_compute_system_callback(h))
    }

    unsafe extern "system" fn unregister_process(cb: HCS_CALLBACK) -> HRESULT {
        unregister_with(cb, |h| sim().unregister_process_callback(h))
    }

    unsafe extern "system" fn create_process(
        system: HCS_SYSTEM,
        params: PCWSTR,
        info: *mut HCS_PROCESS_INFORMATION,
        process: *mut HCS_PROCESS,
        result: *mut PWSTR,
    ) -> HRESULT {
        let r = sim().create_process(sh(system), &read(params));
        // SAFETY: valid out-slots from the driver.
        match unsafe { finish(r, result) } {
            Ok((h, pinfo)) => {
                // No stdio pipes were requested, so the simulator returns none.
                // SAFETY: valid out-slots.
                unsafe {
                    *process = h.raw() as HCS_PROCESS;
                    (*info).ProcessId = pinfo.pid;
                }
                0
            }
            Err(hr) => hr,
        }
    }

    unsafe extern "system" fn open_process(
        _s: HCS_SYSTEM,
        _pid: u32,
        _p: *mut HCS_PROCESS,
        _r: *mut PWSTR,
    ) -> HRESULT {
        E_NOTIMPL
    }

    unsafe extern "system" fn close_process(process: HCS_PROCESS) -> HRESULT {
        match sim().close_process(ph(process)) {
            Ok(()) => 0,
            Err(f) => f.code.0 as i32,
        }
    }

    unsafe extern "system" fn terminate_process(process: HCS_PROCESS, result: *mut PWSTR) -> HRESULT {
        // SAFETY: valid out-slot.
        match unsafe { finish(sim().terminate_process(ph(process)), result) } {
            Ok(()) => 0,
            Err(hr) => hr,
        }
    }

    unsafe extern "system" fn signal_process(
        process: HCS_PROCESS,
        options: PCWSTR,
        result: *mut PWSTR,
    ) -> HRESULT {
        // SAFETY: valid out-slot.
        match unsafe { finish(sim().signal_process(ph(process), &read(options)), result) } {
            Ok(()) => 0,
            Err(hr) => hr,
        }
    }

    unsafe extern "system" fn modify_process(
        process: HCS_PROCESS,
        settings: PCWSTR,
        result: *mut PWSTR,
    ) -> HRESULT {
        // SAFETY: valid out-slot.
        match unsafe { finish(sim().modify_process(ph(process), &read(settings)), result) } {
            Ok(()) => 0,
            Err(hr) => hr,
        }
    }

    unsafe extern "system" fn process_info(
        process: HCS_PROCESS,
        info: *mut HCS_PROCESS_INFORMATION,
        result: *mut PWSTR,
    ) -> HRESULT {
        // SAFETY: valid out-slots.
        match unsafe { finish(sim().get_process_info(ph(process)), result) } {
            Ok(p) => {
                // SAFETY: valid out-slot.
                unsafe { (*info).ProcessId = p.pid };
                0
            }
            Err(hr) => hr,
        }
    }

    unsafe extern "system" fn process_properties(
        process: HCS_PROCESS,
        props: *mut PWSTR,
        result: *mut PWSTR,
    ) -> HRESULT {
        // SAFETY: valid out-slots.
        match unsafe { finish(sim().get_process_properties(ph(process)), result) } {
            Ok(p) => {
                // SAFETY: valid out-slot.
                unsafe { *props = alloc(&p) };
                0
            }
            Err(hr) => hr,
        }
    }

    fn table() -> VmComputeTable {
        VmComputeTable {
            enumerate_compute_systems: enumerate,
            create_compute_system: create,
            open_compute_system: open,
            close_compute_system: close_system,
            start_compute_system: start,
            shutdown_compute_system: shutdown,
            terminate_compute_system: terminate,
            pause_compute_system: pause,
            resume_compute_system: resume,
            save_compute_system: save,
            get_compute_system_properties: properties,
            modify_compute_system: modify,
            register_compute_system_callback: register_system,
            unregister_compute_system_callback: unregister_system,
            create_process,
            open_process,
            close_process,
            terminate_process,
            signal_process,
            get_process_info: process_info,
            get_process_properties: process_properties,
            modify_process,
            register_process_callback: register_process,
            unregister_process_callback: unregister_process,
            get_service_properties: None,
            modify_service_settings: None,
            free_string: fake_free,
            library: None,
        }
    }

    // ------------------------------------------------------------ the lifecycle

    static NEXT: AtomicU64 = AtomicU64::new(0);

    fn cycle(driver: &Arc<dyn Driver>) {
        let id = format!("ffi-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let s = hcs::System::create_with(driver.clone(), &id, CONFIG, Timeouts::default()).expect("create");
        s.start().expect("start");
        let p = s.create_process(PARAMS).expect("exec");
        p.wait().expect("process wait");
        assert_eq!(p.exit_code().expect("exit code"), 0);
        p.close().expect("process close");
        s.close().expect("system close");
    }

    fn run(driver: &Arc<dyn Driver>, n: u64) -> Duration {
        let t0 = Instant::now();
        for _ in 0..n {
            cycle(driver);
        }
        t0.elapsed()
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    fn ratio(ffi: &Arc<dyn Driver>, direct: &Arc<dyn Driver>, reps: usize, n: u64) {
        run(ffi, 50);
        run(direct, 50);
        let (mut o, mut b) = (Vec::new(), Vec::new());
        for i in 0..reps {
            let per = |d| run(d, n).as_nanos() as f64 / n as f64;
            if i % 2 == 0 {
                o.push(per(ffi));
                b.push(per(direct));
            } else {
                b.push(per(direct));
                o.push(per(ffi));
            }
        }
        let (o, b) = (median(&mut o), median(&mut b));
        println!(
            "ffi_v1_lifecycle_vs_sim_direct: ours {o:.0} ns, baseline {b:.0} ns, ratio {:.3} (FFI layer's own overhead; no target, info)",
            o / b
        );
        sim().assert_no_leaks();
    }

    pub fn main() {
        let ffi: Arc<dyn Driver> = VmComputeDriver::new(table());
        let direct: Arc<dyn Driver> = sim().clone();
        if std::env::args().any(|a| a == "--quick-ratios") {
            let t = Instant::now();
            ratio(&ffi, &direct, 9, 200);
            println!("quick mode finished in {:.1} s", t.elapsed().as_secs_f64());
            return;
        }
        let mut c = Criterion::default().configure_from_args().sample_size(20);
        let mut g = c.benchmark_group("v1_lifecycle");
        g.bench_function("ours_vmcompute_over_fake_table_to_sim", |b| {
            b.iter_custom(|n| run(&ffi, n))
        });
        g.bench_function("baseline_sim_direct", |b| b.iter_custom(|n| run(&direct, n)));
        g.finish();
        c.final_summary();
        ratio(&ffi, &direct, 9, 500);
    }
}

fn main() {
    #[cfg(unix)]
    imp::main();
}
