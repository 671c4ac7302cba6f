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

/// A loaded DLL, **never unloaded** (design FFI §6): [`Library::open`] leaks the module
/// reference it takes, so no `FreeLibrary` ever runs for it. HCS calls our callbacks from its own
/// threads and returns into its own code afterwards; if the last table were dropped on such a
/// thread (or while one runs), unloading the DLL would make that thread return into unmapped
/// code. Pinning makes every function pointer resolved from the DLL valid for the rest of the
/// process. Off Windows no value of this type can exist.
#[derive(Clone)]
pub struct Library {
    #[cfg(windows)]
    inner: &'static libloading::Library,
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
    /// Loads `dll` from `source` and pins it: the module reference taken here is never released,
    /// so the DLL stays mapped until the process exits (loading the same DLL again only bumps the
    /// loader's count of an already pinned module).
    pub fn open(dll: &'static str, source: &DllSource) -> Result<Self, LoadError> {
        #[cfg(windows)]
        {
            use libloading::os::windows as lw;
            let res = match source {
                // SAFETY: loading runs the initialisers (`DllMain`) of the DLL that is found. With
                // LOAD_LIBRARY_SEARCH_SYSTEM32 that can only be the system's own vmcompute.dll /
                // computecore.dll, which we trust like any other system DLL the process uses;
                // nothing else about them is relied on here.
                DllSource::System32 => unsafe {
                    lw::Library::load_with_flags(dll, lw::LOAD_LIBRARY_SEARCH_SYSTEM32)
                },
                // SAFETY: the default search order loads whichever `dll` comes first (application
                // directory first) and runs its initialisers: we rely on the caller, who chose
                // this source (tests with our fake DLLs next to the executable), to control what
                // is found there. Production code uses `System32`.
                DllSource::DefaultSearchOrder => unsafe { lw::Library::new(dll) },
                // SAFETY: as for the default search order: the caller chose the path and
                // vouches for the DLL it names and its initialisers.
                DllSource::Path(p) => unsafe { lw::Library::new(p) },
            };
            match res {
                // Leaked on purpose: the pin described on `Library`.
                Ok(lib) => Ok(Library {
                    inner: Box::leak(Box::new(lib.into())),
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
            // is the export's documented signature. The DLL is pinned, so the address stays
            // valid for the rest of the process.
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
///
/// Every field type must be pointer-sized (a function pointer): the macro asserts it at compile
/// time, because `from_lookup` reinterprets each address as the field's type.
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
        // `from_lookup` reinterprets an export's address as the field's type: only sound for
        // pointer-sized types (function pointers), checked here at compile time.
        $( const _: () = ::std::assert!(
            ::std::mem::size_of::<$ty>() == ::std::mem::size_of::<*mut ::std::ffi::c_void>(),
            concat!("fn_table! field for ", $export, " is not pointer-sized"),
        ); )*
        $( const _: () = ::std::assert!(
            ::std::mem::size_of::<$oty>() == ::std::mem::size_of::<*mut ::std::ffi::c_void>(),
            concat!("fn_table! field for ", $oexport, " is not pointer-sized"),
        ); )*

        $(#[$m])*
        #[derive(Clone)]
        pub struct $name {
            $( $(#[$fm])* #[doc = concat!("`", $export, "` (required).")] pub $field: $ty, )*
            $( $(#[$om])* #[doc = concat!("`", $oexport, "` (optional; `None` when not exported).")]
               pub $ofield: Option<$oty>, )*
            /// Frees every string the DLL returns (exactly once per string).
            pub free_string: $crate::FreeStringFn,
            /// The DLL the exports come from (pinned: never unloaded); `None` for tables of
            /// fake functions.
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
                        // the field type is pointer-sized (asserted at compile time above).
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

#[cfg(all(test, windows))]
mod tests {
    use super::*;
    use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;

    fn loaded(dll: &str) -> bool {
        let w: Vec<u16> = dll.encode_utf16().chain([0]).collect();
        // SAFETY: a NUL-terminated name; GetModuleHandleW takes no reference on the module.
        !unsafe { GetModuleHandleW(w.as_ptr()) }.is_null()
    }

    /// Issue 13 item 6: dropping every `Library` (and so every table) of a DLL must not unload
    /// it, or an HCS thread still returning from one of our callbacks would return into unmapped
    /// code.
    #[test]
    fn a_library_is_never_unloaded_once_opened() {
        // A System32 DLL the test process has not loaded yet stands in for computecore.dll.
        let Some(dll) = ["version.dll", "hid.dll", "mpr.dll", "credui.dll"]
            .into_iter()
            .find(|d| !loaded(d))
        else {
            eprintln!("every candidate DLL is already loaded; nothing to check");
            return;
        };
        let lib = Library::open(dll, &DllSource::System32).expect("a system DLL loads");
        let clone = lib.clone();
        assert!(loaded(dll));
        drop(lib);
        drop(clone);
        assert!(
            loaded(dll),
            "{dll} was unloaded when its last Library was dropped"
        );
    }
}
