//! Run-time DLL loading (design FFI §6): where a DLL comes from ([`DllSource`]), why it
//! could not be used ([`LoadError`]), the loaded module ([`Library`]) and the [`crate::fn_table!`]
//! macro that declares a driver's function-pointer table. Nothing here links an HCS function at
//! load time: DLLs are opened with `libloading` and every export is resolved by name.

use hcs::HResult;
use std::ffi::c_void;
use std::fmt;
use std::path::PathBuf;
use std::ptr::NonNull;

/// Where a DLL is loaded from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DllSource {
    /// `%SystemRoot%\System32` only (`LOAD_LIBRARY_SEARCH_SYSTEM32`): the production default,
    /// a defence against DLL planting.
    #[default]
    System32,
    /// The default search order, application directory first (tests with fake DLLs placed next
    /// to the test executable).
    DefaultSearchOrder,
    /// An explicit path.
    Path(PathBuf),
}

/// Why a driver's DLL could not be used: the driver is unavailable on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The DLL itself could not be loaded (`ERROR_MOD_NOT_FOUND` and friends).
    #[error("driver unavailable: {dll} could not be loaded: {detail}")]
    MissingDll {
        /// The DLL name.
        dll: &'static str,
        /// The loader's message.
        detail: String,
    },
    /// A required export is absent (`ERROR_PROC_NOT_FOUND`).
    #[error("driver unavailable: {dll} has no export {export}")]
    MissingExport {
        /// The DLL name.
        dll: &'static str,
        /// The missing export.
        export: &'static str,
    },
    /// HCS DLLs exist only on Windows.
    #[error("driver unavailable: {dll} can only be loaded on Windows")]
    NotWindows {
        /// The DLL name.
        dll: &'static str,
    },
}

impl LoadError {
    /// The HRESULT that best describes the error (`HRESULT_FROM_WIN32(126)`, `(127)`, or
    /// `E_NOTIMPL` off Windows).
    pub fn code(&self) -> HResult {
        match self {
            LoadError::MissingDll { .. } => HResult(0x8007_007E),
            LoadError::MissingExport { .. } => HResult(0x8007_007F),
            LoadError::NotWindows { .. } => HResult::E_NOTIMPL,
        }
    }
}

/// A loaded DLL. Tables hold a clone, so the DLL stays loaded while any table (and so any
/// handle obtained through it) is alive. Off Windows no value of this type can exist.
#[derive(Clone)]
pub struct Library {
    #[cfg(windows)]
    inner: std::sync::Arc<libloading::Library>,
    #[cfg(not(windows))]
    never: std::convert::Infallible,
    name: &'static str,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library").field("name", &self.name).finish()
    }
}

impl Library {
    /// Loads `dll` from `source`.
    pub fn open(dll: &'static str, source: &DllSource) -> Result<Self, LoadError> {
        #[cfg(windows)]
        {
            use libloading::os::windows as lw;
            let res = match source {
                // SAFETY: loading runs the DLL's initialisers; vmcompute.dll/computecore.dll (and
                // our fakes) have no initialisation side effects that could violate Rust's rules.
                DllSource::System32 => unsafe {
                    lw::Library::load_with_flags(dll, lw::LOAD_LIBRARY_SEARCH_SYSTEM32)
                },
                // SAFETY: as above.
                DllSource::DefaultSearchOrder => unsafe { lw::Library::new(dll) },
                // SAFETY: as above; the caller chose the path.
                DllSource::Path(p) => unsafe { lw::Library::new(p) },
            };
            match res {
                Ok(lib) => Ok(Library {
                    inner: std::sync::Arc::new(lib.into()),
                    name: dll,
                }),
                Err(e) => Err(LoadError::MissingDll {
                    dll,
                    detail: e.to_string(),
                }),
            }
        }
        #[cfg(not(windows))]
        {
            let _ = source;
            Err(LoadError::NotWindows { dll })
        }
    }

    /// The DLL name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The address of `export`, or `None` when the DLL does not export it.
    pub fn symbol(&self, export: &str) -> Option<NonNull<c_void>> {
        #[cfg(windows)]
        {
            // SAFETY: we read the export's address as a plain pointer value; nothing is called
            // and the pointer is only turned into a function pointer by a table whose field type
            // is the export's documented signature.
            let sym = unsafe { self.inner.get::<*mut c_void>(export.as_bytes()) };
            sym.ok().and_then(|s| NonNull::new(*s))
        }
        #[cfg(not(windows))]
        {
            let _ = export;
            match self.never {}
        }
    }
}

/// Defines a function-pointer table for one DLL: one field per export (required exports as plain
/// fields, optional ones as `Option`), the string-free routine and the owning [`Library`], plus
/// an `unsafe fn from_lookup` that fills it from any name → address lookup.
#[macro_export]
macro_rules! fn_table {
    (
        $(#[$m:meta])*
        pub struct $name:ident for $dll:literal {
            required {
                $( $(#[$fm:meta])* $field:ident : $ty:ty = $export:literal, )*
            }
            optional {
                $( $(#[$om:meta])* $ofield:ident : $oty:ty = $oexport:literal, )*
            }
        }
    ) => {
        $(#[$m])*
        #[derive(Clone)]
        pub struct $name {
            $( $(#[$fm])* #[doc = concat!("`", $export, "` (required).")] pub $field: $ty, )*
            $( $(#[$om])* #[doc = concat!("`", $oexport, "` (optional; `None` when not exported).")]
               pub $ofield: Option<$oty>, )*
            /// Frees every string the DLL returns (exactly once per string).
            pub free_string: $crate::FreeStringFn,
            /// Keeps the DLL loaded while this table lives; `None` for tables of fake functions.
            pub library: Option<$crate::Library>,
        }

        impl $name {
            /// The DLL this table binds.
            pub const DLL: &'static str = $dll;

            /// Fills the table from `lookup` (export name → address), with `free_string` as the
            /// string-free routine. A missing required export fails with
            /// [`LoadError::MissingExport`]($crate::LoadError) naming it; a missing optional
            /// export leaves its field `None`.
            ///
            /// # Safety
            ///
            /// Every address `lookup` returns must be a function with exactly the signature of
            /// the field it fills (the export's documented signature), callable for as long as
            /// the returned table (or a clone) is alive.
            pub unsafe fn from_lookup(
                mut lookup: impl FnMut(&str) -> Option<::std::ptr::NonNull<::std::ffi::c_void>>,
                free_string: $crate::FreeStringFn,
                library: Option<$crate::Library>,
            ) -> Result<Self, $crate::LoadError> {
                Ok($name {
                    $( $field: match lookup($export) {
                        // SAFETY: the caller guarantees the address has this field's signature;
                        // a function pointer and a data pointer have the same size here.
                        Some(p) => unsafe { ::std::mem::transmute_copy::<*mut ::std::ffi::c_void, $ty>(&p.as_ptr()) },
                        None => return Err($crate::LoadError::MissingExport { dll: $dll, export: $export }),
                    }, )*
                    $( $ofield: lookup($oexport).map(|p| {
                        // SAFETY: as above.
                        unsafe { ::std::mem::transmute_copy::<*mut ::std::ffi::c_void, $oty>(&p.as_ptr()) }
                    }), )*
                    free_string,
                    library,
                })
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("library", &self.library)
                    $( .field(stringify!($ofield), &self.$ofield.is_some()) )*
                    .finish_non_exhaustive()
            }
        }
    };
}
