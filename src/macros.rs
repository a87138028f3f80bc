//! quelog's own logging macros: `log`'s syntax, the message formatted on the listener.
//!
//! `quelog::info!("request {} handled in {} us by {}", id, us, name)` hands integers,
//! floats, bools, chars and strings over as they are, with the format string in a
//! per-callsite `static` ([`crate::record::callsite`]), and the listener formats the
//! message ([`crate::record::args`]); arguments of other types are formatted on the
//! caller into the record, as `log::info!` would. The line is byte for byte the one
//! `log::info!` with the same arguments writes, in every format.
//!
//! The caller formats the whole message itself, through `log::log!` (so whatever
//! logger is installed gets the record, quelog or not), when:
//!
//! * the format string has anything but `{}`, `{:?}`, `{{` and `}}` (a width, a
//!   precision, `{0}`, `{name}`): decided once per callsite, on its first enabled call;
//! * an argument is named (`x = 5`), or has `Debug` only, or sits at a `{:?}` without
//!   being a raw type;
//! * the message could need cutting, or quelog is not `log`'s global logger (a logger
//!   wrapping a `QueueHandler` is not: its own `log` must see the records), or this is
//!   a forked child (its records are written on the spot, see [`crate::fork`]);
//! * key-values or `logger:` are given: the whole call is `log`'s.
//!
//! The type of each argument is found at compile time by method resolution on
//! `&&&ArgProbe(value)` (a raw type's impl is found first, then any `Display`, then
//! anything), so a generic `T: Display` argument is formatted on the caller.

/// The macros' runtime: not a public API (its names may change in any release).
#[doc(hidden)]
pub mod __private {
    use std::fmt::Display;

    pub use crate::record::args::Arg;
    pub use crate::record::callsite::Callsite;
    pub use log;

    /// Wraps a macro argument for the method-resolution dispatch of the module docs.
    pub struct ArgProbe<'a, T: ?Sized>(pub &'a T);

    /// Raw types: found first (the receiver takes no autoderef).
    pub trait RawArg<'a> {
        fn quelog_arg(&self) -> Arg<'a>;
    }

    /// Any other `Display`: formatted on the caller, into the record.
    pub trait DisplayArg<'a> {
        fn quelog_arg(&self) -> Arg<'a>;
    }

    /// Anything else: the caller formats the whole record.
    pub trait OpaqueArg<'a> {
        fn quelog_arg(&self) -> Arg<'a>;
    }

    macro_rules! raw_arg {
        ($($ty:ty => |$v:ident| $arg:expr;)*) => {$(
            impl<'a> RawArg<'a> for &&ArgProbe<'a, $ty> {
                #[inline(always)]
                fn quelog_arg(&self) -> Arg<'a> {
                    let $v = self.0;
                    $arg
                }
            }
            impl<'a, 'b> RawArg<'a> for &&ArgProbe<'a, &'b $ty> {
                #[inline(always)]
                fn quelog_arg(&self) -> Arg<'a> {
                    let $v: &'a $ty = *self.0;
                    $arg
                }
            }
        )*};
    }

    raw_arg! {
        i8 => |v| Arg::I64(i64::from(*v));
        i16 => |v| Arg::I64(i64::from(*v));
        i32 => |v| Arg::I64(i64::from(*v));
        i64 => |v| Arg::I64(*v);
        isize => |v| Arg::I64(*v as i64);
        u8 => |v| Arg::U64(u64::from(*v));
        u16 => |v| Arg::U64(u64::from(*v));
        u32 => |v| Arg::U64(u64::from(*v));
        u64 => |v| Arg::U64(*v);
        usize => |v| Arg::U64(*v as u64);
        i128 => |v| Arg::I128(*v);
        u128 => |v| Arg::U128(*v);
        f32 => |v| Arg::F32(*v);
        f64 => |v| Arg::F64(*v);
        bool => |v| Arg::Bool(*v);
        char => |v| Arg::Char(*v);
        str => |v| Arg::Str(v);
        String => |v| Arg::Str(v.as_str());
    }

    impl<'a, T: Display> DisplayArg<'a> for &ArgProbe<'a, T> {
        #[inline(always)]
        fn quelog_arg(&self) -> Arg<'a> {
            Arg::Display(self.0)
        }
    }

    impl<'a, T: ?Sized> OpaqueArg<'a> for ArgProbe<'a, T> {
        #[inline(always)]
        fn quelog_arg(&self) -> Arg<'a> {
            Arg::Opaque
        }
    }

    /// One record from a macro: `true` if quelog took it (queued it, or its filter
    /// refused it), `false` if the caller must format it and hand it to `log`.
    /// `target`: the one the call named, if it did. Allocation-free, lock-free,
    /// bounded, as every log call.
    #[inline]
    pub fn log_raw(
        site: &'static Callsite,
        level: log::Level,
        target: Option<&str>,
        args: &[Arg<'_>],
    ) -> bool {
        match crate::handler::raw::global_handler() {
            Some(handler) => handler.log_raw(site, level, target, args),
            None => false,
        }
    }
}

/// Logs a record at a level given at run time, with `log::log!`'s syntax (see the
/// [module docs](crate#formatting-on-the-listener)); the other macros call it.
///
/// ```
/// quelog::log!(log::Level::Warn, "disk {} at {}%", "/var", 93.5);
/// quelog::log!(target: "app::disk", log::Level::Warn, "{} full", "/var");
/// ```
#[macro_export]
macro_rules! log {
    (target: $target:expr, $lvl:expr, $fmt:literal $($rest:tt)*) => {
        $crate::__quelog_munch!(($lvl, $target, true, $fmt) [] $($rest)*)
    };
    ($lvl:expr, $fmt:literal $($rest:tt)*) => {
        $crate::__quelog_munch!(($lvl, ::core::module_path!(), false, $fmt) [] $($rest)*)
    };
    ($($other:tt)+) => {
        $crate::__private::log::log!($($other)+)
    };
}

/// Splits a macro call's arguments one at a time, naming each (every step's `__arg`
/// is a distinct binding: macro hygiene), so each is evaluated exactly once.
#[doc(hidden)]
#[macro_export]
macro_rules! __quelog_munch {
    ($ctx:tt [$($done:tt)*]) => {
        $crate::__quelog_emit!($ctx [$($done)*])
    };
    ($ctx:tt [$($done:tt)*] ,) => {
        $crate::__quelog_emit!($ctx [$($done)*])
    };
    // A named argument: the caller formats (log's own macro, all of it).
    (($lvl:expr, $target:expr, $explicit:tt, $fmt:literal) [$($value:expr => $name:ident,)*]
        , $key:ident = $($rest:tt)*) => {
        $crate::__private::log::log!(
            target: $target, $lvl, $fmt, $($value,)* $key = $($rest)*
        )
    };
    ($ctx:tt [$($done:tt)*] , $value:expr) => {
        $crate::__quelog_emit!($ctx [$($done)* $value => __arg,])
    };
    ($ctx:tt [$($done:tt)*] , $value:expr, $($rest:tt)*) => {
        $crate::__quelog_munch!($ctx [$($done)* $value => __arg,] , $($rest)*)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __quelog_emit {
    (($lvl:expr, $target:expr, $explicit:tt, $fmt:literal) [$($value:expr => $name:ident,)*]) => {{
        let __lvl: $crate::__private::log::Level = $lvl;
        if __lvl <= $crate::__private::log::STATIC_MAX_LEVEL
            && __lvl <= $crate::__private::log::max_level()
        {
            static __CALLSITE: $crate::__private::Callsite =
                $crate::__private::Callsite::new(
                    $fmt,
                    ::core::module_path!(),
                    ::core::file!(),
                    ::core::line!(),
                );
            match ($(&$value,)*) {
                ($($name,)*) => {
                    #[allow(unused_imports)]
                    use $crate::__private::{
                        DisplayArg as _, OpaqueArg as _, RawArg as _,
                    };
                    let __target: &str = $target;
                    let __explicit = if $explicit { Some(__target) } else { None };
                    let __taken = $crate::__private::log_raw(
                        &__CALLSITE,
                        __lvl,
                        __explicit,
                        &[$((&&&$crate::__private::ArgProbe($name)).quelog_arg(),)*],
                    );
                    if !__taken {
                        $crate::__private::log::log!(
                            target: __target, __lvl, $fmt, $(*$name),*
                        );
                    }
                }
            }
        }
    }};
}

/// [`log!`] at [`log::Level::Error`].
///
/// ```
/// quelog::error!("write failed after {} retries: {}", 3, "disk full");
/// ```
#[macro_export]
macro_rules! error {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log!(target: $target, $crate::__private::log::Level::Error, $($arg)+)
    };
    ($($arg:tt)+) => {
        $crate::log!($crate::__private::log::Level::Error, $($arg)+)
    };
}

/// [`log!`] at [`log::Level::Warn`].
///
/// ```
/// quelog::warn!(target: "app::pool", "{} of {} connections busy", 15, 16);
/// ```
#[macro_export]
macro_rules! warn {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log!(target: $target, $crate::__private::log::Level::Warn, $($arg)+)
    };
    ($($arg:tt)+) => {
        $crate::log!($crate::__private::log::Level::Warn, $($arg)+)
    };
}

/// [`log!`] at [`log::Level::Info`].
///
/// ```
/// let (id, us, name) = (7u64, 120u64, "worker-7");
/// quelog::info!("request {} handled in {} us by {}", id, us, name);
/// ```
#[macro_export]
macro_rules! info {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log!(target: $target, $crate::__private::log::Level::Info, $($arg)+)
    };
    ($($arg:tt)+) => {
        $crate::log!($crate::__private::log::Level::Info, $($arg)+)
    };
}

/// [`log!`] at [`log::Level::Debug`].
///
/// ```
/// quelog::debug!("cache hit ratio {:?}", 0.25);
/// ```
#[macro_export]
macro_rules! debug {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log!(target: $target, $crate::__private::log::Level::Debug, $($arg)+)
    };
    ($($arg:tt)+) => {
        $crate::log!($crate::__private::log::Level::Debug, $($arg)+)
    };
}

/// [`log!`] at [`log::Level::Trace`].
///
/// ```
/// quelog::trace!("entering {}", "parse");
/// ```
#[macro_export]
macro_rules! trace {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log!(target: $target, $crate::__private::log::Level::Trace, $($arg)+)
    };
    ($($arg:tt)+) => {
        $crate::log!($crate::__private::log::Level::Trace, $($arg)+)
    };
}
