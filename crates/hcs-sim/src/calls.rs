//! `impl hcs::Driver for Simulator`: every call runs the model's call (`driver.rs`), then
//! applies a `fail … performed` rule (the work is done, the failure is returned, a handle the
//! call made is released again) and writes the call to the record when recording is on.

use crate::driver::Model;
use crate::engine::take_performed_failure;
use crate::record::{CallEvent, CallResult, Event};
use crate::simulator::Simulator;
use hcs::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, Method, MigrationTransport, NotifyContext,
    ProcessHandle, ProcessInfo, Reply, SystemHandle,
};

/// A call's output value: the raw handle it carries, if any.
trait Output {
    fn new_handle(&self) -> Option<u64> {
        None
    }
}
impl Output for () {}
impl Output for String {}
impl Output for ProcessInfo {}
impl Output for SystemHandle {
    fn new_handle(&self) -> Option<u64> {
        Some(self.raw())
    }
}
impl Output for ProcessHandle {
    fn new_handle(&self) -> Option<u64> {
        Some(self.raw())
    }
}
impl Output for (ProcessHandle, ProcessInfo) {
    fn new_handle(&self) -> Option<u64> {
        Some(self.0.raw())
    }
}

/// A call's result, as the record and `performed` need it.
trait Outcome {
    fn summary(&self) -> (CallResult, Option<u64>);
    fn failed(f: Failure) -> Self;
}

impl<T: Output> Outcome for Result<Reply<T>, Failure> {
    fn summary(&self) -> (CallResult, Option<u64>) {
        match self {
            Ok(r) if r.pending => (CallResult::Pending, r.value.new_handle()),
            Ok(r) => (CallResult::Done, r.value.new_handle()),
            Err(f) => (CallResult::Failed(f.code), None),
        }
    }
    fn failed(f: Failure) -> Self {
        Err(f)
    }
}

impl Outcome for Result<(), Failure> {
    fn summary(&self) -> (CallResult, Option<u64>) {
        match self {
            Ok(()) => (CallResult::Done, None),
            Err(f) => (CallResult::Failed(f.code), None),
        }
    }
    fn failed(f: Failure) -> Self {
        Err(f)
    }
}

impl Outcome for Result<CallbackHandle, Failure> {
    fn summary(&self) -> (CallResult, Option<u64>) {
        match self {
            Ok(h) => (CallResult::Done, Some(h.raw())),
            Err(f) => (CallResult::Failed(f.code), None),
        }
    }
    fn failed(f: Failure) -> Self {
        Err(f)
    }
}

impl Simulator {
    /// Runs one model call: `performed` failures, then the record.
    fn call<R: Outcome>(
        &self,
        method: Method,
        handle: Option<u64>,
        system: Option<&str>,
        argument: &str,
        f: impl FnOnce(&Model) -> R,
    ) -> R {
        // Dropped last, after every lock the call took: runs what the call made due when
        // `inline_deliveries` is on.
        let _inline = self.engine.inline_scope();
        let recording = self.engine.recorder.on();
        let system = match (recording, system, handle) {
            (false, _, _) => None,
            (true, Some(id), _) => Some(id.to_string()),
            (true, None, Some(h)) => self.engine.system_of_handle(h),
            (true, None, None) => None,
        };
        let mut result = f(&self.model);
        if let Some(failure) = take_performed_failure() {
            if let (CallResult::Done | CallResult::Pending, new_handle) = result.summary() {
                if let Some(h) = new_handle {
                    self.engine.discard_handle(h);
                }
                tracing::debug!(%method, code = %failure.code, "hcs-sim: call performed, failure reported");
                result = R::failed(failure);
            }
        }
        if recording {
            let (result_kind, new_handle) = result.summary();
            self.engine.recorder.push(Event::Call(CallEvent {
                at: self.engine.recorder.now(),
                method,
                handle,
                system,
                argument: argument.to_string(),
                result: result_kind,
                new_handle,
            }));
        }
        result
    }
}

impl Driver for Simulator {
    fn name(&self) -> &str {
        "sim"
    }

    fn generation(&self) -> ApiGeneration {
        self.engine.generation
    }

    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String> {
        self.call(Method::EnumerateComputeSystems, None, None, query, |m| {
            m.enumerate_compute_systems(query)
        })
    }

    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        ctx: NotifyContext,
    ) -> DriverResult<SystemHandle> {
        self.call(Method::CreateComputeSystem, None, Some(id), configuration, |m| {
            m.create_compute_system(id, configuration, ctx)
        })
    }

    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle> {
        self.call(Method::OpenComputeSystem, None, Some(id), id, |m| {
            m.open_compute_system(id)
        })
    }

    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure> {
        self.call(Method::CloseComputeSystem, Some(system.raw()), None, "", |m| {
            m.close_compute_system(system)
        })
    }

    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.call(
            Method::StartComputeSystem,
            Some(system.raw()),
            None,
            options,
            |m| m.start_compute_system(system, options, ctx),
        )
    }

    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.call(
            Method::ShutdownComputeSystem,
            Some(system.raw()),
            None,
            options,
            |m| m.shutdown_compute_system(system, options),
        )
    }

    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.call(
            Method::TerminateComputeSystem,
            Some(system.raw()),
            None,
            options,
            |m| m.terminate_compute_system(system, options),
        )
    }

    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.call(
            Method::PauseComputeSystem,
            Some(system.raw()),
            None,
            options,
            |m| m.pause_compute_system(system, options, ctx),
        )
    }

    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.call(
            Method::ResumeComputeSystem,
            Some(system.raw()),
            None,
            options,
            |m| m.resume_compute_system(system, options, ctx),
        )
    }

    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.call(
            Method::SaveComputeSystem,
            Some(system.raw()),
            None,
            options,
            |m| m.save_compute_system(system, options, ctx),
        )
    }

    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String> {
        self.call(
            Method::GetComputeSystemProperties,
            Some(system.raw()),
            None,
            query,
            |m| {
                if crate::migration::is_compatibility_query(query)
                    && self.engine.generation == ApiGeneration::V2
                {
                    return self
                        .migration
                        .compatibility_info(&self.engine, system)
                        .map(Reply::done);
                }
                m.get_compute_system_properties(system, query)
            },
        )
    }

    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()> {
        self.call(
            Method::ModifyComputeSystem,
            Some(system.raw()),
            None,
            configuration,
            |m| m.modify_compute_system(system, configuration),
        )
    }

    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        let arg = ctx.raw().to_string();
        self.call(
            Method::RegisterComputeSystemCallback,
            Some(system.raw()),
            None,
            &arg,
            |m| m.register_compute_system_callback(system, ctx),
        )
    }

    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.call(
            Method::UnregisterComputeSystemCallback,
            Some(callback.raw()),
            None,
            "",
            |m| m.unregister_compute_system_callback(callback),
        )
    }

    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)> {
        self.call(Method::CreateProcess, Some(system.raw()), None, parameters, |m| {
            m.create_process(system, parameters)
        })
    }

    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle> {
        let arg = pid.to_string();
        self.call(Method::OpenProcess, Some(system.raw()), None, &arg, |m| {
            m.open_process(system, pid)
        })
    }

    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure> {
        self.call(Method::CloseProcess, Some(process.raw()), None, "", |m| {
            m.close_process(process)
        })
    }

    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()> {
        self.call(Method::TerminateProcess, Some(process.raw()), None, "", |m| {
            m.terminate_process(process)
        })
    }

    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()> {
        self.call(Method::SignalProcess, Some(process.raw()), None, options, |m| {
            m.signal_process(process, options)
        })
    }

    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo> {
        self.call(Method::GetProcessInfo, Some(process.raw()), None, "", |m| {
            m.get_process_info(process)
        })
    }

    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String> {
        self.call(Method::GetProcessProperties, Some(process.raw()), None, "", |m| {
            m.get_process_properties(process)
        })
    }

    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()> {
        self.call(Method::ModifyProcess, Some(process.raw()), None, settings, |m| {
            m.modify_process(process, settings)
        })
    }

    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        let arg = ctx.raw().to_string();
        self.call(
            Method::RegisterProcessCallback,
            Some(process.raw()),
            None,
            &arg,
            |m| m.register_process_callback(process, ctx),
        )
    }

    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.call(
            Method::UnregisterProcessCallback,
            Some(callback.raw()),
            None,
            "",
            |m| m.unregister_process_callback(callback),
        )
    }

    fn get_service_properties(&self, query: &str) -> DriverResult<String> {
        self.call(Method::GetServiceProperties, None, None, query, |m| {
            m.get_service_properties(query)
        })
    }

    fn initialize_live_migration_on_source(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.call(
            Method::InitializeLiveMigrationOnSource,
            Some(system.raw()),
            None,
            options,
            |_| {
                self.migration
                    .initialize(&self.engine, system, options)
                    .map(Reply::done)
            },
        )
    }

    fn start_live_migration_on_source(
        &self,
        system: SystemHandle,
        options: &str,
        transport: &MigrationTransport,
    ) -> DriverResult<()> {
        self.call(
            Method::StartLiveMigrationOnSource,
            Some(system.raw()),
            None,
            options,
            |_| {
                self.migration
                    .start(&self.engine, system, options, transport, true)
                    .map(Reply::done)
            },
        )
    }

    fn start_live_migration_transfer(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.call(
            Method::StartLiveMigrationTransfer,
            Some(system.raw()),
            None,
            options,
            |_| {
                self.migration
                    .transfer(&self.engine, system, options)
                    .map(Reply::done)
            },
        )
    }

    fn finalize_live_migration(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.call(
            Method::FinalizeLiveMigration,
            Some(system.raw()),
            None,
            options,
            |_| {
                self.migration
                    .finalize(&self.engine, system, options)
                    .map(Reply::done)
            },
        )
    }

    fn cancel_live_migration(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.call(
            Method::CancelLiveMigration,
            Some(system.raw()),
            None,
            options,
            |_| {
                self.migration
                    .cancel(&self.engine, system, options)
                    .map(Reply::done)
            },
        )
    }

    fn start_compute_system_as_migration_destination(
        &self,
        system: SystemHandle,
        options: &str,
        transport: &MigrationTransport,
    ) -> DriverResult<()> {
        self.call(
            Method::StartComputeSystemAsMigrationDestination,
            Some(system.raw()),
            None,
            options,
            |_| {
                self.migration
                    .start(&self.engine, system, options, transport, false)
                    .map(Reply::done)
            },
        )
    }

    fn enable_live_migration_events(&self, system: SystemHandle) -> Result<(), Failure> {
        self.call(
            Method::EnableLiveMigrationEvents,
            Some(system.raw()),
            None,
            "",
            |_| self.migration.enable_events(&self.engine, system),
        )
    }
}
