//! The spy: a pass-through [`Driver`] wrapped around the harness's driver that records every
//! callback context the lifecycle hands out, so a check can end by probing that each one is
//! gone from the notification registry, and can fire late callbacks at a closed object.

use hcs::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, MigrationTransport, NotificationKind,
    NotifyContext, ProcessHandle, ProcessInfo, SystemHandle,
};
use std::sync::{Arc, Mutex};

/// A pass-through driver that records the callback contexts the lifecycle hands out.
pub(super) struct Spy {
    inner: Arc<dyn Driver>,
    contexts: Mutex<Vec<(&'static str, NotifyContext)>>,
}

impl Spy {
    /// A spy around `inner`, with nothing recorded yet.
    pub(super) fn new(inner: Arc<dyn Driver>) -> Self {
        Spy {
            inner,
            contexts: Mutex::new(Vec::new()),
        }
    }
    pub(super) fn record(&self, what: &'static str, ctx: NotifyContext) {
        let mut c = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
        if !c.iter().any(|(_, x)| *x == ctx) {
            c.push((what, ctx));
        }
    }
    pub(super) fn contexts(&self) -> Vec<(&'static str, NotifyContext)> {
        self.contexts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub(super) fn last(&self, what: &str) -> Option<NotifyContext> {
        self.contexts()
            .into_iter()
            .rev()
            .find(|(w, _)| *w == what)
            .map(|(_, c)| c)
    }
    pub(super) fn last_system_ctx(&self) -> Option<NotifyContext> {
        self.last("system")
    }
    pub(super) fn last_process_ctx(&self) -> Option<NotifyContext> {
        self.last("process")
    }
}

impl Driver for Spy {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn generation(&self) -> ApiGeneration {
        self.inner.generation()
    }
    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String> {
        self.inner.enumerate_compute_systems(query)
    }
    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        ctx: NotifyContext,
    ) -> DriverResult<SystemHandle> {
        self.record("system", ctx);
        self.inner.create_compute_system(id, configuration, ctx)
    }
    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle> {
        self.inner.open_compute_system(id)
    }
    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure> {
        self.inner.close_compute_system(system)
    }
    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.inner.start_compute_system(system, options, ctx)
    }
    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.inner.shutdown_compute_system(system, options)
    }
    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.inner.terminate_compute_system(system, options)
    }
    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.inner.pause_compute_system(system, options, ctx)
    }
    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.inner.resume_compute_system(system, options, ctx)
    }
    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.inner.save_compute_system(system, options, ctx)
    }
    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String> {
        self.inner.get_compute_system_properties(system, query)
    }
    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()> {
        self.inner.modify_compute_system(system, configuration)
    }
    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.record("system", ctx);
        self.inner.register_compute_system_callback(system, ctx)
    }
    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.inner.unregister_compute_system_callback(callback)
    }
    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)> {
        self.inner.create_process(system, parameters)
    }
    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle> {
        self.inner.open_process(system, pid)
    }
    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure> {
        self.inner.close_process(process)
    }
    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()> {
        self.inner.terminate_process(process)
    }
    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()> {
        self.inner.signal_process(process, options)
    }
    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo> {
        self.inner.get_process_info(process)
    }
    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String> {
        self.inner.get_process_properties(process)
    }
    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()> {
        self.inner.modify_process(process, settings)
    }
    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.record("process", ctx);
        self.inner.register_process_callback(process, ctx)
    }
    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.inner.unregister_process_callback(callback)
    }
    fn get_service_properties(&self, query: &str) -> DriverResult<String> {
        self.inner.get_service_properties(query)
    }
    fn modify_service_settings(&self, settings: &str) -> DriverResult<()> {
        self.inner.modify_service_settings(settings)
    }
    fn cancel_pending(&self, ctx: NotifyContext, kind: NotificationKind) -> Result<(), Failure> {
        self.inner.cancel_pending(ctx, kind)
    }
    fn initialize_live_migration_on_source(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.inner.initialize_live_migration_on_source(system, options)
    }
    fn start_live_migration_on_source(
        &self,
        system: SystemHandle,
        options: &str,
        transport: &MigrationTransport,
    ) -> DriverResult<()> {
        self.inner
            .start_live_migration_on_source(system, options, transport)
    }
    fn start_live_migration_transfer(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.inner.start_live_migration_transfer(system, options)
    }
    fn finalize_live_migration(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.inner.finalize_live_migration(system, options)
    }
    fn cancel_live_migration(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.inner.cancel_live_migration(system, options)
    }
    fn start_compute_system_as_migration_destination(
        &self,
        system: SystemHandle,
        options: &str,
        transport: &MigrationTransport,
    ) -> DriverResult<()> {
        self.inner
            .start_compute_system_as_migration_destination(system, options, transport)
    }
    fn enable_live_migration_events(&self, system: SystemHandle) -> Result<(), Failure> {
        self.inner.enable_live_migration_events(system)
    }
}
