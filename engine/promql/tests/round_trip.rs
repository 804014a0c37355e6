//! Property: for every query that parses, `parse(print(parse(q))) == parse(q)`, and printing
//! is a fixed point (`print(parse(print(e))) == print(e)`).
//!
//! Queries come from two places: a corpus (the upstream Prometheus test scripts when they are
//! present, plus a built-in list) and a generator of random well-typed queries that mixes
//! every construct with awkward names, label values and numbers.

use std::path::Path;

use lookout_promql::{parse, Expr};
use proptest::prelude::*;

fn check_round_trip(query: &str) -> Result<(), TestCaseError> {
    let expr = match parse(query) {
        Ok(expr) => expr,
        Err(error) => return Err(TestCaseError::fail(format!("{query:?}: {error}"))),
    };
    let printed = expr.to_string();
    let again: Expr = parse(&printed).map_err(|error| {
        TestCaseError::fail(format!("{query:?} printed as {printed:?}: {error}"))
    })?;
    prop_assert_eq!(&again, &expr, "{:?} printed as {:?}", query, printed);
    prop_assert_eq!(again.to_string(), printed);
    Ok(())
}

const BUILT_IN: &[&str] = &[
    r#"sum by (job) (rate(http_requests_total{job="api"}[5m]))"#,
    r#"histogram_quantile(0.9, sum without (instance) (rate(x_bucket[5m] offset 1h)))"#,
    r#"topk(3, sum by (app) (jvm.memory.heap.used{app=~|"a|b"}))"#,
    r#"a + on (x) group_left (y) b * ignoring (z) group_right c"#,
    r#"-a ^ -b ^ c % 2 atan2 d"#,
    r#"max_over_time((rate(x[1m]) > bool 0)[1h:5m] @ end() offset -5m)"#,
    r#"{"my.metric", "label.name"="v\n\"q\""} unless on () {__name__=~"a.+"}"#,
    r#"label_replace(up, "dst", "$1", "src", "(.*)") or vector(time())"#,
    r#"count_values("value", x) / scalar(count(x))"#,
    r#"foo[step() * 2:range() / 10] offset min_of(step(), 1h)"#,
    r#"sum(a + fill_left(0) fill_right(NaN) b) without (c)"#,
    r#"rate(x[5m] anchored) - increase(y[1h] smoothed @ 100)"#,
];

/// Queries of the upstream scripts that parse, if the scripts are present.
fn corpus() -> Vec<String> {
    let mut queries: Vec<String> = BUILT_IN.iter().map(|q| (*q).to_owned()).collect();
    let dir = std::env::var_os("LOOKOUT_PROMQL_CONFORMANCE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/conformance/promql/upstream")
        });
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return queries;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "test") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            let mut words = line.split_whitespace();
            if !words.next().is_some_and(|w| w.starts_with("eval")) {
                continue;
            }
            let skip = match words.next() {
                Some("instant") => 4,
                Some("range") => 8,
                _ => continue,
            };
            let mut rest = line;
            for _ in 0..skip {
                let Some(end) = rest.find(char::is_whitespace) else {
                    break;
                };
                rest = rest[end..].trim_start();
            }
            if parse(rest).is_ok() {
                queries.push(rest.to_owned());
            }
        }
    }
    queries
}

// ----- a generator of well-typed queries -----

/// PromQL double-quoted string for arbitrary text.
fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn metric_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9_]{0,8}".prop_filter("not a keyword or number", |name| {
            !matches!(
                name.as_str(),
                "bool" | "on" | "ignoring" | "group_left" | "group_right" | "atan2" | "inf" | "nan"
            )
        }),
        Just("sum".to_owned()),
        Just("offset".to_owned()),
        Just("by".to_owned()),
        Just("start".to_owned()),
        Just("ns:metric:rate5m".to_owned()),
        Just("jvm.memory.heap.used".to_owned()),
        Just("gc.0.count".to_owned()),
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,4}",
        any::<String>().prop_map(|s| s.chars().take(6).collect()),
        Just("a\"b\\c\nd".to_owned()),
    ]
}

fn matcher() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        "[a-z_][a-z0-9_]{0,5}".prop_map(|n| n.to_owned()),
        Just(quote("service.name")),
        Just("NaN".to_owned()),
    ];
    let regex = prop::sample::select(vec!["a.*", ".+", "x|y|z", "(?i)ab", "a\\\\.b", ""]);
    prop_oneof![
        (
            name.clone(),
            prop::sample::select(vec!["=", "!="]),
            label_value()
        )
            .prop_map(|(n, op, v)| format!("{n}{op}{}", quote(&v))),
        (name.clone(), prop::sample::select(vec!["=~", "!~"]), regex)
            .prop_map(|(n, op, v)| format!("{n}{op}{}", quote(v))),
        (
            name,
            prop::sample::select(vec!["=~|", "!~|"]),
            "[a-z]{1,3}(\\|[a-z]{1,3}){0,2}"
        )
            .prop_map(|(n, op, v)| format!("{n}{op}{}", quote(&v))),
    ]
}

fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "1m", "5m", "1h30m", "90s", "1d", "2w", "1y", "250ms", "10"
        ])
        .prop_map(str::to_owned),
        (1u32..1000).prop_map(|n| format!("{n}s")),
    ]
}

fn modifiers() -> impl Strategy<Value = String> {
    let offset = prop_oneof![
        Just(String::new()),
        duration().prop_map(|d| format!(" offset {d}")),
        duration().prop_map(|d| format!(" offset -{d}")),
        Just(" offset step()".to_owned()),
    ];
    let at = prop_oneof![
        Just(String::new()),
        (-100_000i64..100_000).prop_map(|ms| format!(" @ {}", ms as f64 / 1000.0)),
        Just(" @ start()".to_owned()),
        Just(" @ end()".to_owned()),
    ];
    (offset, at, any::<bool>()).prop_map(|(o, a, swap)| {
        if swap {
            format!("{a}{o}")
        } else {
            format!("{o}{a}")
        }
    })
}

/// An instant-vector selector with a non-empty matcher.
fn selector() -> impl Strategy<Value = String> {
    let with_name =
        (metric_name(), prop::collection::vec(matcher(), 0..3)).prop_map(|(name, matchers)| {
            if matchers.is_empty() {
                name
            } else {
                format!("{name}{{{}}}", matchers.join(", "))
            }
        });
    let without_name =
        (label_value(), prop::collection::vec(matcher(), 0..2)).prop_map(|(name, mut matchers)| {
            matchers.insert(0, quote(&format!("m{name}")));
            format!("{{{}}}", matchers.join(","))
        });
    prop_oneof![3 => with_name, 1 => without_name]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..1000).prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite, non-negative", |v| v.is_finite() && *v >= 0.0)
            .prop_map(|v| format!("{v}")),
        Just("Inf".to_owned()),
        Just("NaN".to_owned()),
        Just("0x1F".to_owned()),
        Just("1e-3".to_owned()),
        Just("5m".to_owned()),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        number(),
        Just("time()".to_owned()),
        Just("pi()".to_owned()),
        selector().prop_map(|s| format!("scalar({s})")),
    ]
}

fn vector() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (selector(), modifiers()).prop_map(|(s, m)| format!("{s}{m}")),
        (selector(), duration(), modifiers()).prop_map(|(s, d, m)| format!("rate({s}[{d}]{m})")),
        (selector(), duration()).prop_map(|(s, d)| format!("increase2({s}[{d}] anchored)")),
        scalar().prop_map(|s| format!("vector({s})")),
    ];
    leaf.prop_recursive(4, 40, 3, |inner| {
        let arithmetic = prop::sample::select(vec!["+", "-", "*", "/", "%", "^", "atan2"]);
        let comparison = prop::sample::select(vec!["==", "!=", ">", "<", ">=", "<="]);
        let set = prop::sample::select(vec!["and", "or", "unless"]);
        let matching = prop::sample::select(vec![
            "",
            " on(job)",
            " ignoring(instance, \"a.b\")",
            " on() group_left()",
            " ignoring(x) group_right(y, z)",
            " fill(0)",
            " on(a) fill_left(1) fill_right(-Inf)",
        ]);
        let set_matching = prop::sample::select(vec!["", " on(job)", " ignoring()"]);
        let aggregation = prop::sample::select(vec![
            "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
        ]);
        let grouping = prop::sample::select(vec![
            "",
            " by (job)",
            " without (instance, le)",
            " by ()",
            " by (\"service.name\", sum)",
        ]);
        prop_oneof![
            (
                inner.clone(),
                arithmetic.clone(),
                matching.clone(),
                inner.clone()
            )
                .prop_map(|(a, op, m, b)| format!("({a}) {op}{m} ({b})")),
            (
                inner.clone(),
                comparison,
                any::<bool>(),
                matching,
                inner.clone()
            )
                .prop_map(|(a, op, b, m, c)| format!(
                    "({a}) {op}{}{m} ({c})",
                    if b { " bool" } else { "" }
                )),
            (inner.clone(), set, set_matching, inner.clone())
                .prop_map(|(a, op, m, b)| format!("({a}) {op}{m} ({b})")),
            (inner.clone(), arithmetic, scalar(), any::<bool>()).prop_map(|(a, op, s, left)| {
                if left {
                    format!("{s} {op} ({a})")
                } else {
                    format!("({a}) {op} {s}")
                }
            }),
            (aggregation, grouping.clone(), inner.clone(), any::<bool>()).prop_map(
                |(op, g, a, after)| {
                    if after {
                        format!("{op}({a}){g}")
                    } else {
                        format!("{op}{g} ({a})")
                    }
                }
            ),
            (
                prop::sample::select(vec!["topk", "bottomk", "quantile", "limitk"]),
                grouping,
                scalar(),
                inner.clone()
            )
                .prop_map(|(op, g, s, a)| format!("{op}{g}({s}, {a})")),
            inner.clone().prop_map(|a| format!("-{a}")),
            inner.clone().prop_map(|a| format!("+({a})")),
            inner.clone().prop_map(|a| format!("({a})")),
            (
                prop::sample::select(vec!["abs", "ceil", "sort", "timestamp", "sgn", "exp"]),
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{f}({a})")),
            (
                inner.clone(),
                duration(),
                prop::option::of(duration()),
                modifiers()
            )
                .prop_map(|(a, r, s, m)| format!(
                    "max_over_time(({a})[{r}:{}]{m})",
                    s.unwrap_or_default()
                )),
            inner
                .clone()
                .prop_map(|a| format!("label_replace({a}, \"dst\", \"$1\", \"src\", \"(.*)\")")),
            inner
                .clone()
                .prop_map(|a| format!("histogram_quantile(0.9, {a})")),
            inner.prop_map(|a| format!("clamp({a}, -1, 1)")),
        ]
    })
}

/// Operator chains without parentheses, to exercise precedence and associativity: every
/// operand is an instant vector, so any grouping is well typed.
fn operator_chain() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec![
        "+", "-", "*", "/", "%", "^", "atan2", "==", "!= bool", "<", ">= bool", "and", "or",
        "unless",
    ]);
    let operand = (
        prop::sample::select(vec!["", "-", "+", "--"]),
        prop::sample::select(vec![
            "a",
            "b offset 1m",
            "c @ 10",
            "sum(d)",
            "rate(e[5m])",
            "(f + g)",
        ]),
    )
        .prop_map(|(sign, operand)| format!("{sign}{operand}"));
    (operand.clone(), prop::collection::vec((op, operand), 1..6)).prop_map(|(first, rest)| {
        let mut query = first;
        for (op, operand) in rest {
            query.push_str(&format!(" {op} {operand}"));
        }
        query
    })
}

/// Random sequences of PromQL tokens and fragments, most of them invalid.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "sum",
        "by",
        "(",
        ")",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "foo",
        "a.b",
        "x:y",
        "\"v\"",
        "'w'",
        "`r`",
        "=",
        "=~",
        "=~|",
        "!~|",
        "!=",
        "==",
        "+",
        "-",
        "*",
        "/",
        "^",
        "%",
        "<",
        ">/",
        "</",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "group_left",
        "bool",
        "offset",
        "@",
        "start()",
        "step()",
        "min_of",
        "5m",
        "1.5",
        "0x1f",
        "Inf",
        "NaN",
        "rate",
        "topk",
        "1",
        "#c\n",
        "anchored",
        "fill",
        "fill(0)",
        "é",
        "\\",
        ".",
        "..",
        "_",
    ]);
    let separator = prop::sample::select(vec!["", " "]);
    prop::collection::vec((token, separator), 1..14).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(t, s)| format!("{t}{s}"))
            .collect::<String>()
    })
}

fn check_no_panic_and_round_trip(query: &str) -> Result<(), TestCaseError> {
    match parse(query) {
        Ok(_) => check_round_trip(query),
        Err(error) => {
            prop_assert!(error.position <= query.len(), "{:?}: {}", query, error);
            prop_assert!(query.is_char_boundary(error.position));
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_queries_round_trip(query in vector()) {
        check_round_trip(&query)?;
    }

    #[test]
    fn operator_chains_round_trip(query in operator_chain()) {
        check_round_trip(&query)?;
    }

    #[test]
    fn token_soup_never_panics(query in token_soup()) {
        check_no_panic_and_round_trip(&query)?;
    }

    #[test]
    fn arbitrary_text_never_panics(query in any::<String>()) {
        check_no_panic_and_round_trip(&query)?;
    }

    #[test]
    fn generated_scalars_round_trip(query in scalar(), negate in any::<bool>()) {
        let query = if negate { format!("-{query}") } else { query };
        check_round_trip(&query)?;
    }
}

#[test]
fn corpus_queries_round_trip() {
    let queries = corpus();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 1024,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::sample::select(queries), |query| {
            check_round_trip(&query)
        })
        .unwrap();
}
