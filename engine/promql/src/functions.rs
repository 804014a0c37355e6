//! The function table: name, argument types, arity and return type of every function the
//! parser accepts.
//!
//! It holds every function of Prometheus 3.x (including the experimental ones, flagged) plus
//! SOFALookout's `increase2`, `sum2_over_time` and `zhistogram_quantile`; `holt_winters` is
//! accepted as the pre-3.0 name of `double_exponential_smoothing`.

use crate::ast::ValueType;

/// The signature of a PromQL function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionInfo {
    /// The name as called.
    pub name: &'static str,
    /// Types of the arguments. For variadic functions the last entry is the type of the
    /// optional/repeated arguments.
    pub arg_types: &'static [ValueType],
    /// 0: exactly `arg_types.len()` arguments. n > 0: the last argument type may appear 0..=n
    /// times. -1: the last argument type may appear any number of times (including zero).
    pub variadic: i32,
    /// The type of the result.
    pub return_type: ValueType,
    /// Prometheus only accepts the function with `--enable-feature=promql-experimental-functions`.
    pub experimental: bool,
}

impl FunctionInfo {
    /// The fewest arguments a call may have.
    pub fn min_args(&self) -> usize {
        if self.variadic == 0 {
            self.arg_types.len()
        } else {
            self.arg_types.len().saturating_sub(1)
        }
    }

    /// The most arguments a call may have; `None` when unbounded.
    pub fn max_args(&self) -> Option<usize> {
        match self.variadic {
            0 => Some(self.arg_types.len()),
            n if n > 0 => Some(self.arg_types.len() - 1 + n as usize),
            _ => None,
        }
    }

    /// The expected type of argument `index` (the last declared type for variadic tails);
    /// `None` when a non-variadic function has no such argument.
    pub fn arg_type(&self, index: usize) -> Option<ValueType> {
        match self.arg_types.get(index) {
            Some(ty) => Some(*ty),
            None if self.variadic != 0 => self.arg_types.last().copied(),
            None => None,
        }
    }
}

const S: ValueType = ValueType::Scalar;
const V: ValueType = ValueType::Vector;
const M: ValueType = ValueType::Matrix;
const STR: ValueType = ValueType::String;

const fn stable(
    name: &'static str,
    arg_types: &'static [ValueType],
    variadic: i32,
    return_type: ValueType,
) -> FunctionInfo {
    FunctionInfo {
        name,
        arg_types,
        variadic,
        return_type,
        experimental: false,
    }
}

const fn experimental(
    name: &'static str,
    arg_types: &'static [ValueType],
    variadic: i32,
    return_type: ValueType,
) -> FunctionInfo {
    let info = stable(name, arg_types, variadic, return_type);
    FunctionInfo {
        experimental: true,
        ..info
    }
}

/// Every function, sorted by name.
static FUNCTIONS: &[FunctionInfo] = &[
    stable("abs", &[V], 0, V),
    stable("absent", &[V], 0, V),
    stable("absent_over_time", &[M], 0, V),
    stable("acos", &[V], 0, V),
    stable("acosh", &[V], 0, V),
    stable("asin", &[V], 0, V),
    stable("asinh", &[V], 0, V),
    stable("atan", &[V], 0, V),
    stable("atanh", &[V], 0, V),
    stable("avg_over_time", &[M], 0, V),
    stable("ceil", &[V], 0, V),
    stable("changes", &[M], 0, V),
    stable("clamp", &[V, S, S], 0, V),
    stable("clamp_max", &[V, S], 0, V),
    stable("clamp_min", &[V, S], 0, V),
    stable("cos", &[V], 0, V),
    stable("cosh", &[V], 0, V),
    stable("count_over_time", &[M], 0, V),
    stable("day_of_month", &[V], 1, V),
    stable("day_of_week", &[V], 1, V),
    stable("day_of_year", &[V], 1, V),
    stable("days_in_month", &[V], 1, V),
    stable("deg", &[V], 0, V),
    stable("delta", &[M], 0, V),
    stable("deriv", &[M], 0, V),
    experimental("double_exponential_smoothing", &[M, S, S], 0, V),
    experimental("end", &[], 0, S),
    stable("exp", &[V], 0, V),
    stable("first_over_time", &[M], 0, V),
    stable("floor", &[V], 0, V),
    stable("histogram_avg", &[V], 0, V),
    stable("histogram_count", &[V], 0, V),
    stable("histogram_fraction", &[S, S, V], 0, V),
    stable("histogram_quantile", &[S, V], 0, V),
    experimental("histogram_quantiles", &[V, STR, S, S], 9, V),
    stable("histogram_stddev", &[V], 0, V),
    stable("histogram_stdvar", &[V], 0, V),
    stable("histogram_sum", &[V], 0, V),
    stable("hour", &[V], 1, V),
    stable("idelta", &[M], 0, V),
    stable("increase", &[M], 0, V),
    stable("increase2", &[M], 0, V),
    experimental("info", &[V, V], 1, V),
    stable("irate", &[M], 0, V),
    stable("label_join", &[V, STR, STR, STR], -1, V),
    stable("label_replace", &[V, STR, STR, STR, STR], 0, V),
    stable("last_over_time", &[M], 0, V),
    stable("ln", &[V], 0, V),
    stable("log10", &[V], 0, V),
    stable("log2", &[V], 0, V),
    experimental("mad_over_time", &[M], 0, V),
    experimental("max_of", &[S, S], 0, S),
    stable("max_over_time", &[M], 0, V),
    experimental("min_of", &[S, S], 0, S),
    stable("min_over_time", &[M], 0, V),
    stable("minute", &[V], 1, V),
    stable("month", &[V], 1, V),
    stable("pi", &[], 0, S),
    stable("predict_linear", &[M, S], 0, V),
    stable("present_over_time", &[M], 0, V),
    stable("quantile_over_time", &[S, M], 0, V),
    stable("rad", &[V], 0, V),
    experimental("range", &[], 0, S),
    stable("rate", &[M], 0, V),
    stable("resets", &[M], 0, V),
    stable("round", &[V, S], 1, V),
    stable("scalar", &[V], 0, S),
    stable("sgn", &[V], 0, V),
    stable("sin", &[V], 0, V),
    stable("sinh", &[V], 0, V),
    stable("sort", &[V], 0, V),
    experimental("sort_by_label", &[V, STR], -1, V),
    experimental("sort_by_label_desc", &[V, STR], -1, V),
    stable("sort_desc", &[V], 0, V),
    stable("sqrt", &[V], 0, V),
    experimental("start", &[], 0, S),
    experimental("start_timestamp", &[V], 0, V),
    stable("stddev_over_time", &[M], 0, V),
    stable("stdvar_over_time", &[M], 0, V),
    experimental("step", &[], 0, S),
    stable("sum2_over_time", &[M], 0, V),
    stable("sum_over_time", &[M], 0, V),
    stable("tan", &[V], 0, V),
    stable("tanh", &[V], 0, V),
    stable("time", &[], 0, S),
    stable("timestamp", &[V], 0, V),
    experimental("ts_of_first_over_time", &[M], 0, V),
    experimental("ts_of_last_over_time", &[M], 0, V),
    experimental("ts_of_max_over_time", &[M], 0, V),
    experimental("ts_of_min_over_time", &[M], 0, V),
    stable("vector", &[S], 0, V),
    stable("year", &[V], 1, V),
    stable("zhistogram_quantile", &[S, V], 0, V),
];

/// Old names that resolve to another function.
const ALIASES: &[(&str, &str)] = &[("holt_winters", "double_exponential_smoothing")];

/// Looks a function up by its exact (case-sensitive) name or alias.
pub fn lookup_function(name: &str) -> Option<&'static FunctionInfo> {
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, target)| *target);
    FUNCTIONS
        .binary_search_by(|info| info.name.cmp(name))
        .ok()
        .map(|index| &FUNCTIONS[index])
}

/// All functions, sorted by name (aliases not included).
pub fn functions() -> &'static [FunctionInfo] {
    FUNCTIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(FUNCTIONS.windows(2).all(|pair| pair[0].name < pair[1].name));
    }

    #[test]
    fn lookups() {
        let rate = lookup_function("rate").unwrap();
        assert_eq!(rate.arg_types, &[ValueType::Matrix]);
        assert_eq!(rate.return_type, ValueType::Vector);
        assert!(lookup_function("RATE").is_none());
        assert!(lookup_function("foo").is_none());
        assert_eq!(
            lookup_function("holt_winters").unwrap().name,
            "double_exponential_smoothing"
        );
        assert!(lookup_function("zhistogram_quantile").is_some());
        assert!(lookup_function("increase2").is_some());
        assert!(lookup_function("sum2_over_time").is_some());
    }

    #[test]
    fn arity() {
        let round = lookup_function("round").unwrap();
        assert_eq!((round.min_args(), round.max_args()), (1, Some(2)));
        let hour = lookup_function("hour").unwrap();
        assert_eq!((hour.min_args(), hour.max_args()), (0, Some(1)));
        let join = lookup_function("label_join").unwrap();
        assert_eq!((join.min_args(), join.max_args()), (3, None));
        assert_eq!(join.arg_type(7), Some(ValueType::String));
        let time = lookup_function("time").unwrap();
        assert_eq!((time.min_args(), time.max_args()), (0, Some(0)));
        assert_eq!(time.arg_type(0), None);
    }

    #[test]
    fn every_requested_function_exists() {
        for name in [
            "abs",
            "absent",
            "absent_over_time",
            "ceil",
            "changes",
            "clamp",
            "clamp_max",
            "clamp_min",
            "day_of_month",
            "day_of_week",
            "day_of_year",
            "days_in_month",
            "delta",
            "deriv",
            "exp",
            "floor",
            "histogram_quantile",
            "histogram_avg",
            "histogram_count",
            "histogram_sum",
            "histogram_fraction",
            "histogram_stddev",
            "histogram_stdvar",
            "double_exponential_smoothing",
            "hour",
            "idelta",
            "increase",
            "irate",
            "label_join",
            "label_replace",
            "ln",
            "log10",
            "log2",
            "minute",
            "month",
            "predict_linear",
            "rate",
            "resets",
            "round",
            "scalar",
            "sgn",
            "sort",
            "sort_desc",
            "sort_by_label",
            "sort_by_label_desc",
            "sqrt",
            "time",
            "timestamp",
            "vector",
            "year",
            "avg_over_time",
            "min_over_time",
            "max_over_time",
            "sum_over_time",
            "count_over_time",
            "stddev_over_time",
            "stdvar_over_time",
            "last_over_time",
            "present_over_time",
            "mad_over_time",
            "quantile_over_time",
            "acos",
            "acosh",
            "asin",
            "asinh",
            "atan",
            "atanh",
            "cos",
            "cosh",
            "deg",
            "pi",
            "rad",
            "sin",
            "sinh",
            "tan",
            "tanh",
            "info",
        ] {
            assert!(lookup_function(name).is_some(), "{name}");
        }
    }
}
