//! `impl Driver for FakeDriver`: every driver call logs itself, validates its handle, takes
//! its scripted [`Answer`], blocks on the answer's gate, settles into a reply, and schedules the
//! answer's notifications.

use super::answers::{Answer, Outcome};
use super::state::{
    invalid_handle, process_properties, system_properties, Call, CallbackKind, State, Subject, Target,
    SERVICE_PROPERTIES,
};
use super::sync::{lock, wait};
use super::FakeDriver;
use hcs::hresult::CodePair;
use hcs::{
    ApiGeneration, CallbackHandle, Driver, DriverResult, Failure, HResult, Method, MigrationTransport,
    NotifyContext, ProcessHandle, ProcessInfo, Reply, SystemHandle,
};
use std::sync::Arc;
use std::thread;

/// The fake's internals: the steps every driver call goes through.
impl FakeDriver {
    /// The pending code of this fake's generation.
    fn pending_code(&self) -> HResult {
        CodePair::OPERATION_PENDING.pick(self.inner.generation == ApiGeneration::V2)
    }

    /// Logs the call, validates its handle, takes its answer and passes the answer's gate.
    fn begin(
        &self,
        method: Method,
        subject: Subject,
        id: Option<&str>,
        arg: String,
        ctx: Option<NotifyContext>,
    ) -> Result<Answer, Failure> {
        let answer = {
            let mut st = lock(&self.inner.state);
            let handle = match subject {
                Subject::None => None,
                Subject::System(h) | Subject::Process(h) | Subject::Callback(_, h) => Some(h),
            };
            let id = id.map(str::to_owned).or_else(|| st.system_id_of(subject));
            tracing::debug!(driver = "fake", %method, handle, id = id.as_deref(), "driver call");
            st.calls.push(Call {
                method,
                handle,
                id,
                arg,
                ctx,
            });
            if let Some(ctx) = ctx {
                if method.is_pending_capable() {
                    st.pending_ctx.insert(method, ctx);
                }
            }
            if !st.valid(subject) {
                tracing::debug!(driver = "fake", %method, handle, "invalid handle");
                return Err(invalid_handle());
            }
            st.next_answer(method)
        };
        if let Some(gate) = &answer.gate {
            gate.pass();
        }
        Ok(answer)
    }

    /// Turns an answer into a reply, computing the value (under the state lock) only when the
    /// answer is not a failure.
    fn settle<T>(
        &self,
        answer: &Answer,
        make: impl FnOnce(&mut State) -> Result<T, Failure>,
    ) -> DriverResult<T> {
        if let Outcome::Fail(code) = answer.outcome {
            return Err(Failure {
                code,
                document: answer.document.clone(),
                source: None,
            });
        }
        let value = make(&mut lock(&self.inner.state))?;
        let mut reply = match answer.outcome {
            Outcome::Pending => Reply::pending(value),
            _ => Reply::done(value),
        };
        reply.document = answer.document.clone();
        Ok(reply)
    }

    /// Like [`Self::settle`] for methods that cannot report pending (close, register,
    /// unregister): pending becomes a failure with the generation's pending code.
    fn settle_plain<T>(
        &self,
        answer: &Answer,
        make: impl FnOnce(&mut State) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        match answer.outcome {
            Outcome::Fail(code) => Err(Failure {
                code,
                document: answer.document.clone(),
                source: None,
            }),
            Outcome::Pending => Err(Failure {
                code: self.pending_code(),
                document: answer.document.clone(),
                source: None,
            }),
            Outcome::Ok => make(&mut lock(&self.inner.state)),
        }
    }

    /// Starts one thread per scripted completion of `answer`.
    fn schedule(&self, answer: &Answer, target: Target) {
        for completion in &answer.completions {
            lock(&self.inner.state).scheduled += 1;
            let inner = Arc::clone(&self.inner);
            let completion = completion.clone();
            let spawned = thread::Builder::new()
                .name("hcs-fake-notify".into())
                .spawn(move || inner.run_completion(target, &completion));
            if let Err(err) = spawned {
                tracing::warn!(driver = "fake", %err, "could not start a notification thread");
                let mut st = lock(&self.inner.state);
                st.scheduled -= 1;
                self.inner.changed.notify_all();
            }
        }
    }

    /// A system operation with no value: start, shutdown, terminate, pause, resume, save,
    /// modify.
    fn system_op(
        &self,
        method: Method,
        system: SystemHandle,
        arg: &str,
        ctx: Option<NotifyContext>,
    ) -> DriverResult<()> {
        let subject = Subject::System(system.raw());
        let answer = self.begin(method, subject, None, arg.to_owned(), ctx)?;
        let result = self.settle(&answer, |st| st.check(subject));
        self.schedule(&answer, ctx.map_or(Target::System(system.raw()), Target::Ctx));
        result
    }

    /// A process operation with no value: terminate, signal, modify.
    fn process_op(&self, method: Method, process: ProcessHandle, arg: &str) -> DriverResult<()> {
        let subject = Subject::Process(process.raw());
        let answer = self.begin(method, subject, None, arg.to_owned(), None)?;
        let result = self.settle(&answer, |st| st.check(subject));
        self.schedule(&answer, Target::Process(process.raw()));
        result
    }

    fn register(
        &self,
        method: Method,
        kind: CallbackKind,
        target: u64,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        let subject = match kind {
            CallbackKind::System => Subject::System(target),
            CallbackKind::Process => Subject::Process(target),
        };
        let answer = self.begin(method, subject, None, ctx.raw().to_string(), Some(ctx))?;
        let result = self.settle_plain(&answer, |st| {
            st.check(subject)?;
            Ok(st.new_callback(kind, target, ctx))
        });
        self.schedule(
            &answer,
            match kind {
                CallbackKind::System => Target::System(target),
                CallbackKind::Process => Target::Process(target),
            },
        );
        result
    }

    fn unregister(
        &self,
        method: Method,
        kind: CallbackKind,
        callback: CallbackHandle,
    ) -> Result<(), Failure> {
        let subject = Subject::Callback(kind, callback.raw());
        let answer = self.begin(method, subject, None, String::new(), None)?;
        let target = {
            let st = lock(&self.inner.state);
            match st.callbacks.get(&callback.raw()) {
                Some(e) if e.kind == CallbackKind::System => Target::System(e.target),
                Some(e) => Target::Process(e.target),
                None => Target::Nowhere,
            }
        };
        let result = self.settle_plain(&answer, |st| {
            st.check(subject)?;
            let entry = st.callbacks.get_mut(&callback.raw()).ok_or_else(invalid_handle)?;
            entry.active = false;
            let ctx = entry.ctx;
            if let Some(n) = st.ctx_active.get_mut(&ctx.raw()) {
                *n = n.saturating_sub(1);
            }
            Ok(ctx)
        });
        let result = result.map(|ctx| {
            // The contract: return only after deliveries already running for this
            // registration have returned.
            let mut st = lock(&self.inner.state);
            while st.inflight.get(&ctx.raw()).is_some_and(|n| *n > 0) {
                st = wait(&self.inner.changed, st);
            }
        });
        self.schedule(&answer, target);
        result
    }

    fn close(&self, method: Method, subject: Subject) -> Result<(), Failure> {
        let answer = self.begin(method, subject, None, String::new(), None)?;
        let result = self.settle_plain(&answer, |st| {
            st.check(subject)?;
            match subject {
                Subject::System(h) => {
                    if let Some(e) = st.systems.get_mut(&h) {
                        e.open = false;
                    }
                }
                Subject::Process(h) => {
                    if let Some(e) = st.processes.get_mut(&h) {
                        e.open = false;
                    }
                }
                Subject::None | Subject::Callback(..) => {}
            }
            Ok(())
        });
        let target = match subject {
            Subject::System(h) => Target::System(h),
            Subject::Process(h) => Target::Process(h),
            Subject::None | Subject::Callback(..) => Target::Nowhere,
        };
        self.schedule(&answer, target);
        result
    }
}

impl Driver for FakeDriver {
    fn name(&self) -> &str {
        "fake"
    }

    fn generation(&self) -> ApiGeneration {
        self.inner.generation
    }

    fn enumerate_compute_systems(&self, query: &str) -> DriverResult<String> {
        let answer = self.begin(
            Method::EnumerateComputeSystems,
            Subject::None,
            None,
            query.to_owned(),
            None,
        )?;
        let result = self.settle(&answer, |st| {
            Ok(answer.value.clone().unwrap_or_else(|| {
                let items: Vec<String> = st.known_ids.iter().map(|id| system_properties(id)).collect();
                format!("[{}]", items.join(","))
            }))
        });
        self.schedule(&answer, Target::Nowhere);
        result
    }

    fn create_compute_system(
        &self,
        id: &str,
        configuration: &str,
        ctx: NotifyContext,
    ) -> DriverResult<SystemHandle> {
        let answer = self.begin(
            Method::CreateComputeSystem,
            Subject::None,
            Some(id),
            configuration.to_owned(),
            Some(ctx),
        )?;
        let result = self.settle(&answer, |st| Ok(st.new_system(id)));
        self.schedule(&answer, Target::Ctx(ctx));
        result
    }

    fn open_compute_system(&self, id: &str) -> DriverResult<SystemHandle> {
        let answer = self.begin(
            Method::OpenComputeSystem,
            Subject::None,
            Some(id),
            String::new(),
            None,
        )?;
        let result = self.settle(&answer, |st| Ok(st.new_system(id)));
        let target = result
            .as_ref()
            .map_or(Target::Nowhere, |r| Target::System(r.value.raw()));
        self.schedule(&answer, target);
        result
    }

    fn close_compute_system(&self, system: SystemHandle) -> Result<(), Failure> {
        self.close(Method::CloseComputeSystem, Subject::System(system.raw()))
    }

    fn start_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.system_op(Method::StartComputeSystem, system, options, Some(ctx))
    }

    fn shutdown_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.system_op(Method::ShutdownComputeSystem, system, options, None)
    }

    fn terminate_compute_system(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.system_op(Method::TerminateComputeSystem, system, options, None)
    }

    fn pause_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.system_op(Method::PauseComputeSystem, system, options, Some(ctx))
    }

    fn resume_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.system_op(Method::ResumeComputeSystem, system, options, Some(ctx))
    }

    fn save_compute_system(
        &self,
        system: SystemHandle,
        options: &str,
        ctx: NotifyContext,
    ) -> DriverResult<()> {
        self.system_op(Method::SaveComputeSystem, system, options, Some(ctx))
    }

    fn get_compute_system_properties(&self, system: SystemHandle, query: &str) -> DriverResult<String> {
        let subject = Subject::System(system.raw());
        let answer = self.begin(
            Method::GetComputeSystemProperties,
            subject,
            None,
            query.to_owned(),
            None,
        )?;
        let result = self.settle(&answer, |st| {
            st.check(subject)?;
            Ok(answer.value.clone().unwrap_or_else(|| {
                let id = st.systems.get(&system.raw()).map_or("", |e| e.id.as_str());
                system_properties(id)
            }))
        });
        self.schedule(&answer, Target::System(system.raw()));
        result
    }

    fn modify_compute_system(&self, system: SystemHandle, configuration: &str) -> DriverResult<()> {
        self.system_op(Method::ModifyComputeSystem, system, configuration, None)
    }

    fn register_compute_system_callback(
        &self,
        system: SystemHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.register(
            Method::RegisterComputeSystemCallback,
            CallbackKind::System,
            system.raw(),
            ctx,
        )
    }

    fn unregister_compute_system_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregister(
            Method::UnregisterComputeSystemCallback,
            CallbackKind::System,
            callback,
        )
    }

    fn create_process(
        &self,
        system: SystemHandle,
        parameters: &str,
    ) -> DriverResult<(ProcessHandle, ProcessInfo)> {
        let subject = Subject::System(system.raw());
        let answer = self.begin(Method::CreateProcess, subject, None, parameters.to_owned(), None)?;
        let result = self.settle(&answer, |st| {
            st.check(subject)?;
            let pid = answer.pid.unwrap_or_else(|| {
                let pid = st.next_pid;
                st.next_pid = st.next_pid.wrapping_add(1);
                pid
            });
            let handle = st.new_process(pid, system.raw());
            if let Some(stdio) = &answer.stdio {
                st.created_stdio.insert(pid, stdio.clone());
            }
            let info = st.process_info(pid, answer.stdio.as_ref());
            Ok((handle, info))
        });
        let target = result
            .as_ref()
            .map_or(Target::Nowhere, |r| Target::Process(r.value.0.raw()));
        self.schedule(&answer, target);
        result
    }

    fn open_process(&self, system: SystemHandle, pid: u32) -> DriverResult<ProcessHandle> {
        let subject = Subject::System(system.raw());
        let answer = self.begin(Method::OpenProcess, subject, None, pid.to_string(), None)?;
        let result = self.settle(&answer, |st| {
            st.check(subject)?;
            Ok(st.new_process(answer.pid.unwrap_or(pid), system.raw()))
        });
        let target = result
            .as_ref()
            .map_or(Target::Nowhere, |r| Target::Process(r.value.raw()));
        self.schedule(&answer, target);
        result
    }

    fn close_process(&self, process: ProcessHandle) -> Result<(), Failure> {
        self.close(Method::CloseProcess, Subject::Process(process.raw()))
    }

    fn terminate_process(&self, process: ProcessHandle) -> DriverResult<()> {
        self.process_op(Method::TerminateProcess, process, "")
    }

    fn signal_process(&self, process: ProcessHandle, options: &str) -> DriverResult<()> {
        self.process_op(Method::SignalProcess, process, options)
    }

    fn get_process_info(&self, process: ProcessHandle) -> DriverResult<ProcessInfo> {
        let subject = Subject::Process(process.raw());
        let answer = self.begin(Method::GetProcessInfo, subject, None, String::new(), None)?;
        let result = self.settle(&answer, |st| {
            st.check(subject)?;
            let pid = answer
                .pid
                .or_else(|| st.processes.get(&process.raw()).map(|e| e.pid))
                .unwrap_or_default();
            // A scripted answer's streams, else fresh streams of the ones the process was
            // created with (HCS hands a process's pipe handles out again).
            let stdio = answer
                .stdio
                .clone()
                .or_else(|| st.created_stdio.get(&pid).cloned());
            Ok(st.process_info(pid, stdio.as_ref()))
        });
        self.schedule(&answer, Target::Process(process.raw()));
        result
    }

    fn get_process_properties(&self, process: ProcessHandle) -> DriverResult<String> {
        let subject = Subject::Process(process.raw());
        let answer = self.begin(Method::GetProcessProperties, subject, None, String::new(), None)?;
        let result = self.settle(&answer, |st| {
            st.check(subject)?;
            Ok(answer.value.clone().unwrap_or_else(|| {
                let pid = st.processes.get(&process.raw()).map_or(0, |e| e.pid);
                process_properties(pid)
            }))
        });
        self.schedule(&answer, Target::Process(process.raw()));
        result
    }

    fn modify_process(&self, process: ProcessHandle, settings: &str) -> DriverResult<()> {
        self.process_op(Method::ModifyProcess, process, settings)
    }

    fn register_process_callback(
        &self,
        process: ProcessHandle,
        ctx: NotifyContext,
    ) -> Result<CallbackHandle, Failure> {
        self.register(
            Method::RegisterProcessCallback,
            CallbackKind::Process,
            process.raw(),
            ctx,
        )
    }

    fn unregister_process_callback(&self, callback: CallbackHandle) -> Result<(), Failure> {
        self.unregister(Method::UnregisterProcessCallback, CallbackKind::Process, callback)
    }

    fn get_service_properties(&self, query: &str) -> DriverResult<String> {
        let answer = self.begin(
            Method::GetServiceProperties,
            Subject::None,
            None,
            query.to_owned(),
            None,
        )?;
        let result = self.settle(&answer, |_| {
            Ok(answer
                .value
                .clone()
                .unwrap_or_else(|| SERVICE_PROPERTIES.to_owned()))
        });
        self.schedule(&answer, Target::Nowhere);
        result
    }

    fn modify_service_settings(&self, settings: &str) -> DriverResult<()> {
        let answer = self.begin(
            Method::ModifyServiceSettings,
            Subject::None,
            None,
            settings.to_owned(),
            None,
        )?;
        let result = self.settle(&answer, |_| Ok(()));
        self.schedule(&answer, Target::Nowhere);
        result
    }

    fn initialize_live_migration_on_source(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.system_op(Method::InitializeLiveMigrationOnSource, system, options, None)
    }

    fn start_live_migration_on_source(
        &self,
        system: SystemHandle,
        options: &str,
        _transport: &MigrationTransport,
    ) -> DriverResult<()> {
        self.system_op(Method::StartLiveMigrationOnSource, system, options, None)
    }

    fn start_live_migration_transfer(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.system_op(Method::StartLiveMigrationTransfer, system, options, None)
    }

    fn finalize_live_migration(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.system_op(Method::FinalizeLiveMigration, system, options, None)
    }

    fn cancel_live_migration(&self, system: SystemHandle, options: &str) -> DriverResult<()> {
        self.system_op(Method::CancelLiveMigration, system, options, None)
    }

    fn start_compute_system_as_migration_destination(
        &self,
        system: SystemHandle,
        options: &str,
        _transport: &MigrationTransport,
    ) -> DriverResult<()> {
        self.system_op(
            Method::StartComputeSystemAsMigrationDestination,
            system,
            options,
            None,
        )
    }

    fn enable_live_migration_events(&self, system: SystemHandle) -> Result<(), Failure> {
        let subject = Subject::System(system.raw());
        let answer = self.begin(
            Method::EnableLiveMigrationEvents,
            subject,
            None,
            String::new(),
            None,
        )?;
        let result = self.settle_plain(&answer, |st| st.check(subject));
        self.schedule(&answer, Target::System(system.raw()));
        result
    }
}
