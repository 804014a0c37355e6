use lookout_model::{MatchKind, Matcher};

use super::*;
use crate::{parse, parse_matchers, parse_with};

fn ok(input: &str) -> Expr {
    match parse(input) {
        Ok(expr) => expr,
        Err(error) => panic!("{input:?} should parse, got {error}"),
    }
}

/// Parses, and checks that printing and re-parsing gives the same tree.
fn ok_round_trip(input: &str) -> Expr {
    let expr = ok(input);
    let printed = expr.to_string();
    let again = parse(&printed)
        .unwrap_or_else(|error| panic!("{input:?} printed as {printed:?}, which fails: {error}"));
    assert_eq!(again, expr, "{input:?} printed as {printed:?}");
    expr
}

fn err(input: &str) -> ParseError {
    match parse(input) {
        Ok(expr) => panic!("{input:?} should fail, parsed as {expr:?}"),
        Err(error) => error,
    }
}

fn err_msg(input: &str) -> String {
    err(input).message
}

fn num(value: f64) -> Expr {
    Expr::NumberLiteral(value)
}

fn selector(name: &str) -> VectorSelector {
    VectorSelector {
        name: Some(name.to_owned()),
        matchers: vec![Matcher::equal(METRIC_NAME_LABEL, name)],
        offset: None,
        offset_expr: None,
        at: None,
        extended_range: None,
    }
}

fn vs(name: &str) -> Expr {
    Expr::VectorSelector(selector(name))
}

fn binary(op: BinaryOp, lhs: Expr, rhs: Expr) -> Expr {
    let both_vectors =
        lhs.value_type() == ValueType::Vector && rhs.value_type() == ValueType::Vector;
    let matching = both_vectors.then(|| {
        let mut matching = VectorMatching::one_to_one();
        if op.is_set_operator() {
            matching.card = VectorMatchCardinality::ManyToMany;
        }
        matching
    });
    Expr::Binary(Binary {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
        return_bool: false,
        matching,
    })
}

fn print(input: &str) -> String {
    ok(input).to_string()
}

// ----- literals -----

#[test]
fn number_literals() {
    assert_eq!(ok("1"), num(1.0));
    assert_eq!(ok("+Inf"), num(f64::INFINITY));
    assert_eq!(ok("-Inf"), num(f64::NEG_INFINITY));
    assert_eq!(ok("inf"), num(f64::INFINITY));
    assert_eq!(ok("NaN"), num(f64::NAN));
    assert_eq!(ok(".5"), num(0.5));
    assert_eq!(ok("5."), num(5.0));
    assert_eq!(ok("123.4567"), num(123.4567));
    assert_eq!(ok("5e-3"), num(0.005));
    assert_eq!(ok("5e3"), num(5000.0));
    assert_eq!(ok("0xc"), num(12.0));
    assert_eq!(ok("0x1f"), num(31.0));
    assert_eq!(ok("0755"), num(493.0));
    assert_eq!(ok("+5.5e-3"), num(0.0055));
    assert_eq!(ok("-0755"), num(-493.0));
    assert_eq!(ok("5m"), num(300.0));
    assert_eq!(ok("1h30m"), num(5400.0));
    assert_eq!(ok("-1"), num(-1.0));
    assert_eq!(ok("--1"), num(1.0));
}

#[test]
fn bad_numbers() {
    assert_eq!(err_msg("2.5."), "bad number or duration syntax: \"2.5.\"");
    assert!(err_msg("100..4").starts_with("bad number or duration syntax"));
    assert!(err_msg("0deadbeef").starts_with("bad number or duration syntax"));
    assert!(err_msg(&"9".repeat(400)).starts_with("error parsing number"));
    assert_eq!(err_msg("."), "unexpected character: '.'");
}

#[test]
fn string_literals() {
    assert_eq!(
        ok(r#""double-quoted string \" with escaped quote""#),
        Expr::StringLiteral("double-quoted string \" with escaped quote".into())
    );
    assert_eq!(
        ok(r#"'single-quoted string \' with escaped quote'"#),
        Expr::StringLiteral("single-quoted string ' with escaped quote".into())
    );
    assert_eq!(
        ok("`backtick-quoted string`"),
        Expr::StringLiteral("backtick-quoted string".into())
    );
    assert_eq!(
        ok(r#""\a\b\f\n\r\t\v\\\" - \u1234\U00010111\U0001011111☺""#),
        Expr::StringLiteral(
            "\u{7}\u{8}\u{c}\n\r\t\u{b}\\\" - \u{1234}\u{10111}\u{10111}11☺".into()
        )
    );
    // Byte escapes must still form valid UTF-8 (Prometheus allows any bytes).
    assert!(err_msg(r#""\xFF""#).contains("UTF-8"));
    assert_eq!(ok(r#""\x41\101""#), Expr::StringLiteral("AA".into()));
    assert_eq!(err_msg("`\\``"), "unterminated raw string");
    assert_eq!(err_msg(r#""\"#), "escape sequence not terminated");
    assert_eq!(err_msg(r#""\c""#), "unknown escape sequence U+0063 'c'");
    assert_eq!(
        err_msg(r#""\x.""#),
        "illegal character U+002E '.' in escape sequence"
    );
    assert_eq!(
        err_msg(r#"-"string""#),
        "unary expression only allowed on expressions of type scalar or instant vector, got \"string\""
    );
}

#[test]
fn empty_input_and_comments() {
    assert_eq!(err_msg(""), "no expression found in input");
    assert_eq!(
        err_msg("# just a comment\n\n"),
        "no expression found in input"
    );
    assert_eq!(
        ok("1 # one\n+ 2"),
        binary(BinaryOp::Add, num(1.0), num(2.0))
    );
    assert_eq!(
        ok("foo{# comment\njob=\"x\"}").to_string(),
        r#"foo{job="x"}"#
    );
}

// ----- selectors -----

#[test]
fn vector_selectors() {
    assert_eq!(ok("foo"), vs("foo"));
    assert_eq!(ok("min"), vs("min"));
    assert_eq!(ok("foo:bar"), vs("foo:bar"));
    let Expr::VectorSelector(selector) = ok(r#"foo{a="b", c!="d", e=~"f.*", g!~"h",}"#) else {
        panic!()
    };
    assert_eq!(selector.name.as_deref(), Some("foo"));
    let kinds: Vec<(&str, MatchKind)> = selector
        .matchers
        .iter()
        .map(|m| (m.name(), m.kind()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("__name__", MatchKind::Equal),
            ("a", MatchKind::Equal),
            ("c", MatchKind::NotEqual),
            ("e", MatchKind::Regex),
            ("g", MatchKind::NotRegex),
        ]
    );
    let Expr::VectorSelector(selector) = ok(r#"{__name__=~"bar", __name__!~"baz"}"#) else {
        panic!()
    };
    assert_eq!(selector.name, None);
    assert_eq!(selector.matchers.len(), 2);
    ok(r#"{__name__="bar", __name__="baz"}"#);
    ok(r#"foo{NaN='bc'}"#);
    ok(r#"foo{bar='}'}"#);
    ok("offset{step=\"1s\"}[5m]");
    ok("step{offset=\"1s\"}[5m]");
    ok(r#"anchored{job="test"}"#);
    ok("foo * sum");
    ok("sum(sum)");
    ok("a + sum");
    ok("start");
    ok(r#"end{start="foo"}"#);
}

#[test]
fn quoted_utf8_names() {
    let Expr::VectorSelector(selector) = ok(r#"{"my.metric", "label.name"="v"}"#) else {
        panic!()
    };
    assert_eq!(selector.name, None);
    assert_eq!(
        selector.matchers[0],
        Matcher::equal("__name__", "my.metric")
    );
    assert_eq!(selector.matchers[1], Matcher::equal("label.name", "v"));
    assert_eq!(
        print(r#"{"my.metric", "label.name"="v"}"#),
        r#"{__name__="my.metric","label.name"="v"}"#
    );
    ok_round_trip(r#"{'foo\'bar', 'a\\dos\\path'='boo\\urns'}"#);
    // Two name matchers inside braces are allowed.
    ok(r#"{"bar", __name__="baz"}"#);
}

#[test]
fn sofa_lookout_extensions() {
    let Expr::VectorSelector(selector) = ok(r#"jvm.memory.heap.used{app="x"}"#) else {
        panic!()
    };
    assert_eq!(selector.name.as_deref(), Some("jvm.memory.heap.used"));
    assert_eq!(
        print(r#"jvm.memory.heap.used{app="x"}"#),
        r#"jvm.memory.heap.used{app="x"}"#
    );
    ok_round_trip("rate(jvm.gc.0.count[5m]) > bool.5");
    let Expr::VectorSelector(selector) = ok(r#"up{app=~|"a|b", zone!~|"z1"}"#) else {
        panic!()
    };
    assert_eq!(selector.matchers[1].kind(), MatchKind::InList);
    assert!(selector.matchers[1].matches("b"));
    assert!(!selector.matchers[1].matches("a|b"));
    assert_eq!(selector.matchers[2].kind(), MatchKind::NotInList);
    assert_eq!(
        print(r#"up{app=~|"a|b", zone!~|"z1"}"#),
        r#"up{app=~|"a|b",zone!~|"z1"}"#
    );
    // An in-list alone selects only listed values: non-empty.
    ok(r#"{app=~|"a|b"}"#);
    assert_eq!(
        err_msg(r#"{app!~|"a|b"}"#),
        "vector selector must contain at least one non-empty matcher"
    );
    ok_round_trip(r#"zhistogram_quantile(0.9, sum by (le) (rate(x[1m])))"#);
    ok_round_trip("increase2(x[1m]) + sum2_over_time(y[1m])");
    let Expr::Call(call) = ok("holt_winters(x[5m], 0.5, 0.5)") else {
        panic!()
    };
    assert_eq!(call.func.name, "double_exponential_smoothing");
}

#[test]
fn selector_errors() {
    assert_eq!(err_msg("{"), "unexpected end of input inside braces");
    assert_eq!(err_msg("}"), "unexpected character: '}'");
    assert_eq!(err_msg("some{"), "unexpected end of input inside braces");
    assert_eq!(err_msg("some}"), "unexpected character: '}'");
    assert_eq!(
        err_msg("some_metric{a=b}"),
        "unexpected identifier \"b\" in label matching, expected string"
    );
    assert_eq!(
        err_msg(r#"some_metric{a:b="b"}"#),
        "unexpected character inside braces: ':'"
    );
    assert_eq!(
        err_msg(r#"foo{a*"b"}"#),
        "unexpected character inside braces: '*'"
    );
    assert_eq!(
        err_msg(r#"foo{a>="b"}"#),
        "unexpected character inside braces: '>'"
    );
    assert_eq!(
        err_msg("foo{gibberish}"),
        "unexpected \"}\" in label matching, expected label matching operator"
    );
    assert_eq!(err_msg("foo{1}"), "unexpected character inside braces: '1'");
    for empty in [
        "{}",
        r#"{x=""}"#,
        r#"{x=~".*"}"#,
        r#"{x!~".+"}"#,
        r#"{x!="a"}"#,
    ] {
        assert_eq!(
            err_msg(empty),
            "vector selector must contain at least one non-empty matcher",
            "{empty}"
        );
    }
    assert_eq!(
        err_msg(r#"foo{__name__="bar"}"#),
        "metric name must not be set twice: \"foo\" or \"bar\""
    );
    assert_eq!(
        err_msg("foo{__name__= =}"),
        "unexpected \"=\" in label matching, expected string"
    );
    assert_eq!(
        err_msg("foo{,}"),
        "unexpected \",\" in label matching, expected identifier or \"}\""
    );
    assert_eq!(
        err_msg(r#"foo{__name__ == "bar"}"#),
        "unexpected \"=\" in label matching, expected string"
    );
    assert_eq!(
        err_msg(r#"foo{__name__="bar" lol}"#),
        "unexpected identifier \"lol\" in label matching, expected \",\" or \"}\""
    );
    assert_eq!(
        err_msg(r#"foo{"a"=}"#),
        "unexpected \"}\" in label matching, expected string"
    );
    assert!(err_msg(r#"foo{a=~"("}"#).contains("invalid regular expression"));
}

#[test]
fn matrix_selectors() {
    let range = |input: &str| match ok(input) {
        Expr::MatrixSelector(matrix) => matrix.range_ms,
        other => panic!("{other:?}"),
    };
    assert_eq!(range("test[5s]"), 5000);
    assert_eq!(range("test[5m]"), 300_000);
    assert_eq!(range("foo[5m30s]"), 330_000);
    assert_eq!(range("test[1001ms]"), 1001);
    assert_eq!(range("test[5]"), 5000);
    assert_eq!(range("foo[4.18]"), 4180);
    assert_eq!(range("foo[(5s)]"), 5000);
    assert_eq!(range(r#"test{a="b"}[5y]"#), 5 * 365 * 86_400_000);
    let Expr::MatrixSelector(matrix) = ok("test[5d] OFFSET 10s") else {
        panic!()
    };
    assert_eq!(matrix.vector.offset, Some(10_000));
    let Expr::MatrixSelector(matrix) = ok("foo[3ms] @ 2.345") else {
        panic!()
    };
    assert_eq!(matrix.vector.at, Some(AtModifier::Timestamp(2345)));
    assert_eq!(ok("test[5m]").value_type(), ValueType::Matrix);
}

#[test]
fn range_errors() {
    assert_eq!(
        err_msg("foo[5mm]"),
        "bad number or duration syntax: \"5mm\""
    );
    assert_eq!(
        err_msg("foo[5m1]"),
        "bad number or duration syntax: \"5m1\""
    );
    assert_eq!(
        err_msg("foo[5m:1m1]"),
        "bad number or duration syntax: \"1m1\""
    );
    assert_eq!(
        err_msg("foo[5y1hs]"),
        "unknown unit \"hs\" in duration \"5y1hs\""
    );
    assert_eq!(
        err_msg("foo[5m1h]"),
        "not a valid duration string: \"5m1h\""
    );
    assert_eq!(err_msg("foo[0m]"), "duration must be greater than 0");
    assert_eq!(err_msg("foo[-1]"), "duration must be greater than 0");
    assert_eq!(
        err_msg(r#"foo["5m"]"#),
        "unexpected character in duration expression: '\"'"
    );
    assert_eq!(
        err_msg("foo[]"),
        "unexpected \"]\" in subquery or range selector, expected number, duration, step(), or range()"
    );
    assert_eq!(
        err_msg("some_metric[5m] OFFSET 1mm"),
        "bad number or duration syntax: \"1mm\""
    );
    assert_eq!(
        err_msg("some_metric[5m] OFFSET"),
        "unexpected end of input in offset, expected number, duration, step(), or range()"
    );
    assert_eq!(
        err_msg("some_metric OFFSET 1m[5m]"),
        "no offset modifiers allowed before range"
    );
    assert_eq!(
        err_msg("some_metric[5m] @"),
        "unexpected end of input in @, expected timestamp"
    );
    assert_eq!(
        err_msg("some_metric @ 1234 [5m]"),
        "no @ modifiers allowed before range"
    );
    assert_eq!(
        err_msg("some_metric @ start() [5m]"),
        "no @ modifiers allowed before range"
    );
    assert_eq!(
        err_msg("some_metric offset step()[5m]"),
        "no offset modifiers allowed before range"
    );
    assert_eq!(
        err_msg("(foo + bar)[5m]"),
        "ranges only allowed for vector selectors"
    );
    assert_eq!(
        err_msg(r#"foo{bar="baz"}["#),
        "unexpected end of input in duration expression"
    );
    assert_eq!(
        err_msg("foo[5s x 5s]"),
        "unexpected character: 'x', expected ':'"
    );
    assert_eq!(err_msg("foo offset 9.5e10"), "duration out of range");
    assert_eq!(err_msg("foo[9.5e10]"), "duration out of range");
    assert_eq!(
        err_msg("foo[step]"),
        "unexpected \"]\" in subquery or range selector, expected number, duration, step(), or range()"
    );
    assert_eq!(err_msg("-test[5m]"), "unary expression only allowed on expressions of type scalar or instant vector, got \"range vector\"");
}

#[test]
fn offsets_and_at() {
    let Expr::VectorSelector(selector) = ok("foo offset 5m") else {
        panic!()
    };
    assert_eq!(selector.offset, Some(300_000));
    let Expr::VectorSelector(selector) = ok("foo offset -7m") else {
        panic!()
    };
    assert_eq!(selector.offset, Some(-420_000));
    let offset = |input: &str| match ok(input) {
        Expr::VectorSelector(selector) => selector.offset,
        other => panic!("{other:?}"),
    };
    assert_eq!(offset("foo OFFSET 1h30m"), Some(5_400_000));
    assert_eq!(offset("foo OFFSET 1m30ms"), Some(60_030));
    assert_eq!(offset("foo offset +(5)"), Some(5000));
    assert_eq!(offset("foo offset -(5)"), Some(-5000));
    assert_eq!(offset("foo offset 0s"), None);
    assert_eq!(offset("foo offset 50"), Some(50_000));
    let at = |input: &str| match ok(input) {
        Expr::VectorSelector(selector) => selector.at,
        Expr::MatrixSelector(matrix) => matrix.vector.at,
        Expr::Subquery(subquery) => subquery.at,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        at("foo @ 1603774568"),
        Some(AtModifier::Timestamp(1_603_774_568_000))
    );
    assert_eq!(at("foo @ -100"), Some(AtModifier::Timestamp(-100_000)));
    assert_eq!(at("foo @ .3"), Some(AtModifier::Timestamp(300)));
    assert_eq!(at("foo @ 3."), Some(AtModifier::Timestamp(3000)));
    assert_eq!(at("foo @ 3.33"), Some(AtModifier::Timestamp(3330)));
    assert_eq!(at("foo @ 3e2"), Some(AtModifier::Timestamp(300_000)));
    assert_eq!(at("foo @ 0xA"), Some(AtModifier::Timestamp(10_000)));
    assert_eq!(at("foo @ -3.3e1"), Some(AtModifier::Timestamp(-33_000)));
    assert_eq!(at("metric @ 1m40s"), Some(AtModifier::Timestamp(100_000)));
    assert_eq!(at("foo @ start()"), Some(AtModifier::Start));
    assert_eq!(at("foo @ end()"), Some(AtModifier::End));
    assert_eq!(at("test[5y] @ end()"), Some(AtModifier::End));
    assert_eq!(at("foo[10m:6s] @ start()"), Some(AtModifier::Start));
    // Either order.
    assert_eq!(ok("metric @ 100 offset 50s"), ok("metric offset 50s @ 100"));
    assert_eq!(
        ok("sum_over_time(metric[100s] @ 100 offset 50s)"),
        ok("sum_over_time(metric[100s] offset 50s @ 100)")
    );
    // Postfix modifiers bind tighter than unary minus.
    assert_eq!(
        ok("-metric @ 100"),
        Expr::Unary(Unary {
            op: UnaryOp::Neg,
            expr: Box::new(ok("metric @ 100"))
        })
    );
}

#[test]
fn offset_and_at_errors() {
    assert_eq!(
        err_msg("1 offset 1d"),
        "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery"
    );
    assert_eq!(
        err_msg("foo offset 1s offset 2s"),
        "offset may not be set multiple times"
    );
    assert_eq!(
        err_msg("foo @ +Inf"),
        "timestamp out of bounds for @ modifier: +Inf"
    );
    assert_eq!(
        err_msg("foo @ -Inf"),
        "timestamp out of bounds for @ modifier: -Inf"
    );
    assert_eq!(
        err_msg("foo @ NaN"),
        "timestamp out of bounds for @ modifier: NaN"
    );
    assert_eq!(
        err_msg("rate(some_metric[5m]) @ 1234"),
        "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery"
    );
    assert_eq!(
        err_msg("foo @ 1 @ 2"),
        "@ <timestamp> may not be set multiple times"
    );
    assert_eq!(err_msg("@@"), "unexpected <op:@>");
}

#[test]
fn subqueries() {
    let Expr::Subquery(subquery) = ok(r#"foo{bar="baz"}[10m:6s]"#) else {
        panic!()
    };
    assert_eq!((subquery.range_ms, subquery.step_ms), (600_000, Some(6000)));
    let Expr::Subquery(subquery) = ok("foo[10m:]") else {
        panic!()
    };
    assert_eq!(subquery.step_ms, None);
    ok_round_trip(r#"min_over_time(rate(foo{bar="baz"}[2s])[5m:5s])"#);
    ok_round_trip(r#"min_over_time(rate(foo{bar="baz"}[2s])[5m:] offset 4m)[4m:3s]"#);
    ok_round_trip(r#"min_over_time(rate(foo{bar="baz"}[2s])[5m:] @ -160377509)[4m:3s]"#);
    ok_round_trip("sum without(and, by, avg, count, alert, annotations)(some_metric) [30m:10s]");
    let Expr::Subquery(subquery) = ok_round_trip("some_metric OFFSET 1m [10m:5s]") else {
        panic!()
    };
    assert!(matches!(&*subquery.expr, Expr::VectorSelector(s) if s.offset == Some(60_000)));
    ok_round_trip("some_metric @ 123 offset 1m [10m:5s]");
    let Expr::Subquery(subquery) = ok_round_trip("some_metric[10m:5s] offset 1m @ 123") else {
        panic!()
    };
    assert_eq!(subquery.offset, Some(60_000));
    assert_eq!(subquery.at, Some(AtModifier::Timestamp(123_000)));
    ok_round_trip(r#"(foo + bar{nm="val"})[5m:] offset 10m"#);
    ok_round_trip(r#"(foo + bar{nm="val"} @ 1234)[5m:] @ 1603775019"#);
    assert_eq!(
        err_msg("test[5d] OFFSET 10s [10m:5s]"),
        "subquery is only allowed on instant vector, got matrix instead"
    );
    assert_eq!(
        err_msg(r#"(foo + bar{nm="val"})[5m:][10m:5s]"#),
        "subquery is only allowed on instant vector, got matrix instead"
    );
    assert_eq!(
        err_msg("rate(food[1m])[1h] offset 1h"),
        "ranges only allowed for vector selectors"
    );
    assert_eq!(err_msg("foo[5m:0s]"), "duration must be greater than 0");
    assert_eq!(err_msg("foo[0.0001]"), "duration must be at least 1ms");
    assert_eq!(err_msg("foo[1ms/2]"), "duration must be at least 1ms");
    assert_eq!(err_msg("foo[5m:0.0004]"), "duration must be at least 1ms");
}

// ----- duration expressions -----

#[test]
fn duration_arithmetic_is_folded() {
    let range = |input: &str| match ok(input) {
        Expr::MatrixSelector(matrix) => {
            assert!(matrix.range_expr.is_none());
            matrix.range_ms
        }
        Expr::Call(call) => match &call.args[0] {
            Expr::MatrixSelector(matrix) => matrix.range_ms,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(range("foo[5m+1m]"), 360_000);
    assert_eq!(range("changes(http_requests[26m+4m])"), 1_800_000);
    assert_eq!(range("changes(http_requests[60*30])"), 1_800_000);
    assert_eq!(range("changes(http_requests[2m*(10+5)])"), 1_800_000);
    assert_eq!(
        range("changes(http_requests[24m+((1.5*2m)+2m)])"),
        1_740_000
    );
    assert_eq!(range("changes(http_requests[-5m+35m])"), 1_800_000);
    assert_eq!(range("changes(http_requests[1h/2])"), 1_800_000);
    assert_eq!(range("changes(http_requests[1h30m % 1h])"), 1_800_000);
    assert_eq!(range("changes(http_requests[30m1s-30m1s % 1m])"), 1_800_000);
    assert_eq!(range("foo[11s+10s-5*2^2]"), 1000);
    assert_eq!(range("foo[-(10s-5s)+20s]"), 15_000);
    let Expr::Subquery(subquery) =
        ok("sum_over_time(metric1_total[29s+1s:((((8 - 2) / 3) * 7s) % 4) + 8000ms])[1m:]")
    else {
        panic!()
    };
    let Expr::Call(call) = *subquery.expr else {
        panic!()
    };
    let Expr::Subquery(inner) = &call.args[0] else {
        panic!()
    };
    assert_eq!((inner.range_ms, inner.step_ms), (30_000, Some(10_000)));
    assert_eq!(err_msg("foo[5s/0d]"), "division by zero");
    assert_eq!(err_msg("foo[step()/0d]"), "division by zero");
    assert_eq!(err_msg("foo[step()%0]"), "modulo by zero");
    // Only a literal zero is caught while parsing; `(0)` fails when the query runs.
    let mut expr = ok("foo[step()/(0)]");
    assert_eq!(
        expr.resolve_durations(1000, 0).unwrap_err().message,
        "division by zero"
    );
    assert_eq!(err_msg("foo[5s%0d]"), "modulo by zero");
    assert_eq!(err_msg("foo offset (4d/0)"), "division by zero");
    assert_eq!(err_msg("foo[-2^2]"), "duration must be greater than 0");
}

#[test]
fn offset_takes_a_single_duration_term() {
    // `offset 100 + 2` adds 2 to the selector; parenthesised arithmetic is the offset.
    assert_eq!(
        ok("metric1_total offset 100 + 2"),
        binary(BinaryOp::Add, ok("metric1_total offset 100s"), num(2.0))
    );
    let offset = |input: &str| match ok(input) {
        Expr::VectorSelector(selector) => selector.offset,
        other => panic!("{other:?}"),
    };
    assert_eq!(offset("metric1_total offset (100 + 2)"), Some(102_000));
    assert_eq!(offset("metric1_total offset (2 ^ 2)"), Some(4000));
    assert_eq!(offset("metric1_total offset (-2 ^ 2)"), Some(-4000));
    assert_eq!(offset("metric1_total offset (-2 * 2)"), Some(-4000));
    assert_eq!(
        ok("metric1_total offset -2 ^ 2"),
        binary(BinaryOp::Pow, ok("metric1_total offset -2s"), num(2.0))
    );
    assert_eq!(
        ok("metric1_total offset -2 * 2"),
        binary(BinaryOp::Mul, ok("metric1_total offset -2s"), num(2.0))
    );
    assert_eq!(
        ok("foo offset 5s-8"),
        binary(BinaryOp::Sub, ok("foo offset 5s"), num(8.0))
    );
}

#[test]
fn query_dependent_durations() {
    let Expr::MatrixSelector(mut matrix) = ok_round_trip("foo[step()]") else {
        panic!()
    };
    assert_eq!(matrix.range_expr, Some(DurationExpr::Step));
    let mut expr = Expr::MatrixSelector(matrix.clone());
    assert!(expr.has_query_dependent_durations());
    expr.resolve_durations(15_000, 3_600_000).unwrap();
    assert!(!expr.has_query_dependent_durations());
    let Expr::MatrixSelector(resolved) = expr else {
        panic!()
    };
    assert_eq!(resolved.range_ms, 15_000);
    // An instant query has step 0: the range is not positive.
    matrix.range_expr = Some(DurationExpr::Step);
    let mut instant = Expr::MatrixSelector(matrix);
    assert_eq!(
        instant.resolve_durations(0, 0).unwrap_err().message,
        "duration must be greater than 0"
    );
    for input in [
        "foo[  -  step  (  )  ]",
        "foo[-step()]",
        "foo offset step()",
        "foo offset -step()",
        "foo[max_of(step(),5s)]",
        "foo offset max_of(step(),5s)",
        "foo offset -min_of(5s,step()+8s)",
        "foo[range()]",
        "foo[2m/range()]",
        "foo offset -range()",
        "foo[max_of(range(),5s)]",
        "count_over_time(metric1_total[1+(STep()-5)*2])",
        "count_over_time(metric1_total[((max_of(min_of((step()+1),((1h))),1ms)))])",
        "metric1_total offset -(min_of(step(), 2s)-5)+8000",
        "metric1_total offset +min_of(step(), 1s)^0",
        "sum_over_time(foo[1h:step()] offset range())",
    ] {
        ok_round_trip(input);
    }
    let mut expr = ok("metric1_total offset -step()*2");
    expr.resolve_durations(5000, 10_000).unwrap();
    assert_eq!(
        expr,
        binary(BinaryOp::Mul, ok("metric1_total offset -5s"), num(2.0))
    );
    let mut expr = ok("foo[4s+4s:1s*2] offset (5s-8)");
    expr.resolve_durations(1000, 0).unwrap();
    assert_eq!(expr.to_string(), "foo[8s:2s] offset -3s");
}

#[test]
fn duration_feature_switch() {
    let strict = ParseOptions::prometheus_defaults();
    assert!(parse_with("foo[5m] offset 1m", strict).is_ok());
    assert!(parse_with("foo[100] offset -50", strict).is_ok());
    assert_eq!(
        parse_with("foo[5m+1m]", strict).unwrap_err().message,
        "experimental duration expression is not enabled"
    );
    assert_eq!(
        parse_with("foo offset step()", strict).unwrap_err().message,
        "experimental duration expression is not enabled"
    );
}

// ----- operators -----

#[test]
fn precedence_and_associativity() {
    let (a, b, c) = (vs("a"), vs("b"), vs("c"));
    assert_eq!(
        ok("a + b * c"),
        binary(
            BinaryOp::Add,
            a.clone(),
            binary(BinaryOp::Mul, b.clone(), c.clone())
        )
    );
    assert_eq!(
        ok("a - b - c"),
        binary(
            BinaryOp::Sub,
            binary(BinaryOp::Sub, a.clone(), b.clone()),
            c.clone()
        )
    );
    assert_eq!(
        ok("a ^ b ^ c"),
        binary(
            BinaryOp::Pow,
            a.clone(),
            binary(BinaryOp::Pow, b.clone(), c.clone())
        )
    );
    assert_eq!(
        ok("a atan2 b * c"),
        binary(
            BinaryOp::Mul,
            binary(BinaryOp::Atan2, a.clone(), b.clone()),
            c.clone()
        )
    );
    assert_eq!(
        ok("foo + bar or bla and blub"),
        binary(
            BinaryOp::Or,
            binary(BinaryOp::Add, vs("foo"), vs("bar")),
            binary(BinaryOp::And, vs("bla"), vs("blub"))
        )
    );
    assert_eq!(
        ok("foo and bar unless baz or qux"),
        binary(
            BinaryOp::Or,
            binary(
                BinaryOp::Unless,
                binary(BinaryOp::And, vs("foo"), vs("bar")),
                vs("baz")
            ),
            vs("qux")
        )
    );
    assert_eq!(
        ok("a == bool b + c"),
        Expr::Binary(Binary {
            op: BinaryOp::Eql,
            lhs: Box::new(a.clone()),
            rhs: Box::new(binary(BinaryOp::Add, b.clone(), c.clone())),
            return_bool: true,
            matching: Some(VectorMatching::one_to_one()),
        })
    );
    // Unary minus binds like `*`: weaker than `^`, stronger than `+`.
    assert_eq!(
        ok("-1^2"),
        Expr::Unary(Unary {
            op: UnaryOp::Neg,
            expr: Box::new(binary(BinaryOp::Pow, num(1.0), num(2.0))),
        })
    );
    assert_eq!(ok("-1*2"), binary(BinaryOp::Mul, num(-1.0), num(2.0)));
    assert_eq!(ok("-1+2"), binary(BinaryOp::Add, num(-1.0), num(2.0)));
    assert_eq!(
        ok("-1^-2"),
        Expr::Unary(Unary {
            op: UnaryOp::Neg,
            expr: Box::new(binary(BinaryOp::Pow, num(1.0), num(-2.0))),
        })
    );
    assert_eq!(
        ok("+1 + -2 * 1"),
        binary(
            BinaryOp::Add,
            num(1.0),
            binary(BinaryOp::Mul, num(-2.0), num(1.0))
        )
    );
    assert_eq!(
        ok("-some_metric"),
        Expr::Unary(Unary {
            op: UnaryOp::Neg,
            expr: Box::new(vs("some_metric"))
        })
    );
    assert_eq!(
        ok(" +some_metric"),
        Expr::Unary(Unary {
            op: UnaryOp::Plus,
            expr: Box::new(vs("some_metric"))
        })
    );
    assert_eq!(ok("1 < bool 2 - 1 * 2").value_type(), ValueType::Scalar);
    ok_round_trip("1 + 2/(3*1)");
    ok_round_trip("2 ^ -3 * 4");
    ok_round_trip("---metric @ 100");
}

#[test]
fn vector_matching() {
    let matching = |input: &str| match ok_round_trip(input) {
        Expr::Binary(binary) => binary.matching.expect("vector matching"),
        other => panic!("{other:?}"),
    };
    let m = matching("foo * on(test,blub) bar");
    assert!(m.on);
    assert_eq!(m.labels, ["test", "blub"]);
    assert_eq!(m.card, VectorMatchCardinality::OneToOne);
    let m = matching("foo * on(test,blub) group_left bar");
    assert_eq!(m.card, VectorMatchCardinality::ManyToOne);
    assert!(m.include.is_empty());
    let m = matching("foo / ignoring(test,blub) group_left(blub) bar");
    assert!(!m.on);
    assert_eq!(m.include, ["blub"]);
    let m = matching("foo - on(test,blub) group_right(bar,foo) bar");
    assert_eq!(m.card, VectorMatchCardinality::OneToMany);
    let m = matching("foo and on() bar");
    assert!(m.on && m.labels.is_empty());
    assert_eq!(m.card, VectorMatchCardinality::ManyToMany);
    let m = matching("foo and ignoring() bar");
    assert_eq!(m, {
        let mut plain = VectorMatching::one_to_one();
        plain.card = VectorMatchCardinality::ManyToMany;
        plain
    });
    matching("bar + on(foo) bla / on(baz, buz) group_right(test) blub");
    matching("foo unless on(start) bar");
    let Expr::Binary(scalar) = ok("foo == 1") else {
        panic!()
    };
    assert_eq!(scalar.matching, None);
    // Parentheses after group_left are its labels.
    assert!(parse("a * on(x) group_left (b + c)").is_err());
}

#[test]
fn binary_errors() {
    let cases = [
        (
            "1 and 1",
            "set operator \"and\" not allowed in binary scalar expression",
        ),
        (
            "1 == 1",
            "comparisons between scalars must use BOOL modifier",
        ),
        (
            "1 or 1",
            "set operator \"or\" not allowed in binary scalar expression",
        ),
        (
            "1 unless 1",
            "set operator \"unless\" not allowed in binary scalar expression",
        ),
        ("1 !~ 1", "unexpected character after '!': '~'"),
        ("1 =~ 1", "unexpected character after '=': '~'"),
        ("*test", "unexpected <op:*>"),
        ("1+", "unexpected end of input"),
        ("1 /", "unexpected end of input"),
        ("*1", "unexpected <op:*>"),
        ("(1))", "unexpected right parenthesis ')'"),
        ("((1)", "unclosed left parenthesis"),
        ("(", "unclosed left parenthesis"),
        ("a - on(b) ignoring(c) d", "unexpected <ignoring>"),
        (
            "foo and 1",
            "set operator \"and\" not allowed in binary scalar expression",
        ),
        (
            "1 or on(bar) foo",
            "vector matching only allowed between instant vectors",
        ),
        (
            "foo == on(bar) 10",
            "vector matching only allowed between instant vectors",
        ),
        ("foo + group_left(baz) bar", "unexpected <group_left>"),
        (
            "foo and on(bar) group_left(baz) bar",
            "no grouping allowed for \"and\" operation",
        ),
        (
            "foo or on(bar) group_right(baz) bar",
            "no grouping allowed for \"or\" operation",
        ),
        (
            r#"http_requests{group="production"} + on(instance) group_left(job,instance) cpu_count{type="smp"}"#,
            "label \"instance\" must not occur in ON and GROUP clause at once",
        ),
        (
            "foo + bool bar",
            "bool modifier can only be used on comparison operators",
        ),
        (
            "foo + bool 10",
            "bool modifier can only be used on comparison operators",
        ),
        (
            "foo and bool 10",
            "bool modifier can only be used on comparison operators",
        ),
        ("-=", "unexpected \"=\""),
        ("++-++-+-+-<", "unexpected <op:<>"),
        ("e-+=/(0)", "unexpected \"=\""),
        (
            "foo[5m] + 1",
            "binary expression must contain only scalar and instant vector types",
        ),
        ("foo bar", "unexpected identifier \"bar\""),
        ("a > bool b()", "unknown function with name \"b\""),
    ];
    for (input, message) in cases {
        assert_eq!(err_msg(input), message, "{input}");
    }
}

#[test]
fn fill_modifiers() {
    let matching = |input: &str| match ok_round_trip(input) {
        Expr::Binary(binary) => binary.matching.expect("vector matching"),
        other => panic!("{other:?}"),
    };
    let m = matching("left_vector + fill(0) right_vector");
    assert_eq!((m.fill_lhs, m.fill_rhs), (Some(0.0), Some(0.0)));
    let m = matching("left_vector + fill_left(5) fill_right(7) right_vector");
    assert_eq!((m.fill_lhs, m.fill_rhs), (Some(5.0), Some(7.0)));
    let m = matching("left_vector + fill_right(-Inf) fill_left(NaN) right_vector");
    assert_eq!(m.fill_rhs, Some(f64::NEG_INFINITY));
    assert!(m.fill_lhs.unwrap().is_nan());
    let m = matching("left_vector + ignoring(job) group_left fill(0) right_vector");
    assert_eq!(m.card, VectorMatchCardinality::ManyToOne);
    matching("left_vector == bool fill(30) right_vector");
    // `fill` not followed by `(` is a metric name.
    ok_round_trip("fill + fill(0) other");
    assert_eq!(
        err_msg("foo and fill(0) bar"),
        "filling in missing series not allowed for set operators"
    );
    assert_eq!(
        err_msg("foo + fill(0) 1"),
        "filling in missing series only allowed between instant vectors"
    );
    assert_eq!(
        parse_with("a + fill(0) b", ParseOptions::prometheus_defaults())
            .unwrap_err()
            .message,
        "binop fill modifiers are experimental and not enabled"
    );
}

#[test]
fn trim_operators() {
    let Expr::Binary(binary) = ok_round_trip("h </ 10") else {
        panic!()
    };
    assert_eq!(binary.op, BinaryOp::TrimUpper);
    let Expr::Binary(binary) = ok_round_trip("h >/ 10") else {
        panic!()
    };
    assert_eq!(binary.op, BinaryOp::TrimLower);
}

// ----- aggregations -----

#[test]
fn aggregations() {
    let aggregate = |input: &str| match ok_round_trip(input) {
        Expr::Aggregate(aggregate) => aggregate,
        other => panic!("{other:?}"),
    };
    let a = aggregate("sum by (foo)(some_metric)");
    assert_eq!(
        (a.op, a.grouping.as_slice(), a.without),
        (AggregateOp::Sum, &["foo".to_owned()][..], false)
    );
    assert!(aggregate("sum (some_metric) without (foo)").without);
    assert_eq!(
        aggregate("SUM BY (group) (http_requests)").grouping,
        ["group"]
    );
    assert_eq!(
        aggregate("sum without(and, by, avg, count, alert, annotations)(some_metric)").grouping,
        ["and", "by", "avg", "count", "alert", "annotations"]
    );
    assert_eq!(
        aggregate(r#"sum by ("foo", bar, 'baz')({"some.metric"})"#).grouping,
        ["foo", "bar", "baz"]
    );
    assert_eq!(
        aggregate(r#"sum by ("foo bar")({"some.metric"})"#).grouping,
        ["foo bar"]
    );
    assert_eq!(
        aggregate("sum by (foo,bar,)(some_metric)").grouping,
        ["foo", "bar"]
    );
    assert!(aggregate("sum by ()(some_metric)").grouping.is_empty());
    assert_eq!(
        aggregate("sum by (anchored)(some_metric)").grouping,
        ["anchored"]
    );
    let topk = aggregate("topk(5, some_metric)");
    assert_eq!(topk.param.as_deref(), Some(&num(5.0)));
    let values = aggregate(r#"count_values("value", some_metric)"#);
    assert_eq!(
        values.param.as_deref(),
        Some(&Expr::StringLiteral("value".into()))
    );
    aggregate("quantile without(point)(0.8, data)");
    aggregate("topk by (instance) (1, http_requests)");
    aggregate("limitk(2, http_requests)");
    aggregate("limit_ratio(0.5, http_requests)");
    aggregate("group by (x) (http_requests)");
    aggregate("stddev(some_metric)");
    aggregate("stdvar by (foo)(some_metric)");
    assert_eq!(
        print("sum by (job) (rate(http_requests_total{job=\"api\"}[5m]))"),
        "sum by (job) (rate(http_requests_total{job=\"api\"}[5m]))"
    );
    assert_eq!(print("sum(x) without ()"), "sum without () (x)");
    assert_eq!(print("topk by (a) (5, x)"), "topk by (a) (5, x)");
}

#[test]
fn aggregation_errors() {
    let cases = [
        (
            r#"sum by ("foo)(some_metric{})"#,
            "unterminated quoted string",
        ),
        (
            "sum without(==)(some_metric)",
            "unexpected <op:==> in grouping opts, expected label",
        ),
        (
            "sum without(,)(some_metric)",
            "unexpected \",\" in grouping opts, expected label",
        ),
        (
            "sum without(foo,,)(some_metric)",
            "unexpected \",\" in grouping opts, expected label",
        ),
        (
            "sum some_metric by (test)",
            "unexpected identifier \"some_metric\"",
        ),
        (
            "sum (some_metric) by test",
            "unexpected identifier \"test\" in grouping opts, expected \"(\"",
        ),
        (
            "sum () by (test)",
            "no arguments for aggregate expression provided",
        ),
        (
            "MIN keep_common (some_metric)",
            "unexpected identifier \"keep_common\"",
        ),
        (
            "MIN (some_metric) keep_common",
            "unexpected identifier \"keep_common\"",
        ),
        (
            "sum (some_metric) without (test) by (test)",
            "unexpected <by>",
        ),
        (
            "sum without (test) (some_metric) by (test)",
            "unexpected <by>",
        ),
        (
            "topk(some_metric)",
            "wrong number of arguments for aggregate expression provided, expected 2, got 1",
        ),
        (
            "topk(some_metric,)",
            "trailing commas not allowed in function call args",
        ),
        (
            "topk(some_metric, other_metric)",
            "expected type scalar in aggregation parameter, got instant vector",
        ),
        (
            "count_values(5, other_metric)",
            "expected type string in aggregation parameter, got scalar",
        ),
        (
            "sum(a, b)",
            "wrong number of arguments for aggregate expression provided, expected 1, got 2",
        ),
        (
            "sum(x[5m])",
            "expected type instant vector in aggregation expression, got range vector",
        ),
        ("sum(", "unclosed left parenthesis"),
        ("sum(rate(", "unclosed left parenthesis"),
        (r#"sum by ("")(x)"#, "invalid label name for grouping: \"\""),
    ];
    for (input, message) in cases {
        assert_eq!(err_msg(input), message, "{input}");
    }
    assert_eq!(
        parse_with("limitk(1, x)", ParseOptions::prometheus_defaults())
            .unwrap_err()
            .message,
        "limitk() is experimental and must be enabled with --enable-feature=promql-experimental-functions"
    );
}

// ----- functions -----

#[test]
fn function_calls() {
    let call = |input: &str| match ok_round_trip(input) {
        Expr::Call(call) => call,
        other => panic!("{other:?}"),
    };
    assert_eq!(call("time()").func.name, "time");
    assert_eq!(call("rate(some_metric[5m])").args.len(), 1);
    assert_eq!(call("round(some_metric)").args.len(), 1);
    assert_eq!(call("round(some_metric, 5)").args.len(), 2);
    call(r#"floor(some_metric{foo!="bar"})"#);
    call("hour()");
    call("hour(x)");
    call(r#"label_join(x, "dst", ",", "a", "b", "c")"#);
    call(r#"label_replace(x, "dst", "$1", "src", "(.*)")"#);
    call("clamp(x, 0, 1)");
    call("histogram_quantile(0.9, rate(x_bucket[5m]))");
    call("histogram_fraction(0, 1, x)");
    call("quantile_over_time(0.5, x[5m])");
    call("predict_linear(x[5m], 3600)");
    call("double_exponential_smoothing(x[5m], 0.1, 0.5)");
    call(r#"sort_by_label(x, "a", "b")"#);
    call(r#"sort_by_label_desc(x)"#);
    call("pi()");
    call("vector(1)");
    call("scalar(x)");
    call("absent_over_time(x[5m])");
    call("mad_over_time(x[5m])");
    call("ts_of_max_over_time(x[5m])");
    call("first_over_time(x[5m])");
    call(r#"histogram_quantiles(x, "q", 0.5, 0.9)"#);
    call("start_timestamp(x)");
    call("info(rate(http_request_counter_total{}[5m]))");
    call(r#"info(http_request_counter_total{namespace="zzz"}, {foo="bar", bar="baz"})"#);
    call(r#"info(x, {__name__=~".+"})"#);
    call(r#"info(x, {k=~".*"})"#);
    assert_eq!(ok("step()").value_type(), ValueType::Scalar);
    assert_eq!(
        call("vector(range())").args[0].value_type(),
        ValueType::Scalar
    );
    call("max_of(1, 2)");
    call("start()");
    call("end()");
    assert_eq!(ok("scalar(x)").value_type(), ValueType::Scalar);
}

#[test]
fn function_errors() {
    let cases = [
        (
            "floor()",
            "expected 1 argument(s) in call to \"floor\", got 0",
        ),
        (
            "floor(some_metric, other_metric)",
            "expected 1 argument(s) in call to \"floor\", got 2",
        ),
        (
            "floor(some_metric, 1)",
            "expected 1 argument(s) in call to \"floor\", got 2",
        ),
        (
            "floor(1)",
            "expected type instant vector in call to function \"floor\", got scalar",
        ),
        (
            "hour(some_metric, some_metric, some_metric)",
            "expected at most 1 argument(s) in call to \"hour\", got 3",
        ),
        (
            "time(some_metric)",
            "expected 0 argument(s) in call to \"time\", got 1",
        ),
        (
            "non_existent_function_far_bar()",
            "unknown function with name \"non_existent_function_far_bar\"",
        ),
        (
            "rate(some_metric)",
            "expected type range vector in call to function \"rate\", got instant vector",
        ),
        (
            "rate(avg)",
            "expected type range vector in call to function \"rate\", got instant vector",
        ),
        ("a>b()", "unknown function with name \"b\""),
        (
            "label_join(x)",
            "expected at least 3 argument(s) in call to \"label_join\", got 1",
        ),
        (
            "label_replace(x, 1, \"a\", \"b\", \"c\")",
            "expected type string in call to function \"label_replace\", got scalar",
        ),
        ("RATE(x[5m])", "unknown function with name \"RATE\""),
        ("foo:bar(x)", "unexpected \"(\""),
        (
            r#"info(rate(http_request_counter_total{}[5m]), target_info{foo="bar"})"#,
            "expected label selectors only, got vector selector instead",
        ),
        (
            r#"info(http_request_counter_total{namespace="zzz"}, {foo="bar"} == 1)"#,
            "expected label selectors only",
        ),
        (
            "rate(x[5m],)",
            "trailing commas not allowed in function call args",
        ),
    ];
    for (input, message) in cases {
        assert_eq!(err_msg(input), message, "{input}");
    }
    assert_eq!(
        parse_with("info(x)", ParseOptions::prometheus_defaults())
            .unwrap_err()
            .message,
        "function \"info\" is not enabled"
    );
    assert!(parse_with("rate(x[5m])", ParseOptions::prometheus_defaults()).is_ok());
}

#[test]
fn extended_range_selectors() {
    let Expr::Call(call) = ok_round_trip("rate(foo[3m] anchored)") else {
        panic!()
    };
    let Expr::MatrixSelector(matrix) = &call.args[0] else {
        panic!()
    };
    assert_eq!(matrix.vector.extended_range, Some(ExtendedRange::Anchored));
    ok_round_trip("histogram_count(hist_counter smoothed)");
    ok_round_trip("delta(metric[5m] smoothed offset 1m @ 100)");
    assert_eq!(
        err_msg("1[5m] smoothed"),
        "ranges only allowed for vector selectors"
    );
    assert_eq!(
        err_msg("foo[5m] anchored smoothed"),
        "anchored and smoothed modifiers cannot be used together"
    );
    assert_eq!(
        err_msg("foo[5m:1m] anchored"),
        "anchored modifier is not supported for subqueries"
    );
    assert_eq!(
        parse_with(
            "rate(foo[1m] anchored)",
            ParseOptions::prometheus_defaults()
        )
        .unwrap_err()
        .message,
        "anchored modifier is experimental and not enabled"
    );
}

// ----- errors in general -----

#[test]
fn error_positions_are_byte_offsets() {
    assert_eq!(err("foo +").position, 5);
    assert_eq!(err("foo bar").position, 4);
    assert_eq!(err(r#"{ä="x"} + "#).position, 1);
    assert_eq!(err(r#""ä" + "#).position, 7);
    assert_eq!(err("sum(rate(x[5m])) by (job) offset 5m").position, 0);
    assert_eq!(err("rate(x[5m]) + foo(1)").position, 14);
    assert_eq!(err("1 + 2 == 3").position, 6);
    assert_eq!(
        err("1 + 2 == 3").to_string(),
        "6: comparisons between scalars must use BOOL modifier"
    );
}

#[test]
fn syntax_errors_win_over_type_errors() {
    // Type errors are only reported when everything parsed, as in Prometheus.
    assert_eq!(err_msg("1 == 1 +"), "unexpected end of input");
    assert_eq!(err_msg("rate(x) +"), "unexpected end of input");
}

// ----- printing -----

#[test]
fn canonical_printing() {
    let cases = [
        ("foo", "foo"),
        ("foo{ a = 'b' , c=~\"d\" }", r#"foo{a="b",c=~"d"}"#),
        ("{__name__=\"foo\"}", r#"{__name__="foo"}"#),
        ("foo offset 5m", "foo offset 5m"),
        ("foo offset -90s", "foo offset -1m30s"),
        ("foo @ 100", "foo @ 100.000"),
        ("foo @ -1.5", "foo @ -1.500"),
        ("foo @ -0.5", "foo @ -0.500"),
        (
            "foo[1h30m] offset 1d @ start()",
            "foo[1h30m] @ start() offset 1d",
        ),
        ("foo[90d]", "foo[90d]"),
        ("foo[14d]", "foo[2w]"),
        ("foo[5m:]", "foo[5m:]"),
        ("rate(foo[5m])[1h:1m]", "rate(foo[5m])[1h:1m]"),
        ("a + on(x) group_left b", "a + on (x) group_left () b"),
        (
            "a * ignoring(x) group_right(y, z) b",
            "a * ignoring (x) group_right (y, z) b",
        ),
        ("a > bool on() b", "a > bool on () b"),
        ("a + fill_left(1) b", "a + fill_left (1) b"),
        ("a + fill_left(1) fill_right(1) b", "a + fill (1) b"),
        ("1 + -2", "1 + -2"),
        ("-(1 + 2)", "-(1 + 2)"),
        ("- foo ^ 2", "-foo ^ 2"),
        ("1e21", "1000000000000000000000"),
        ("0.1", "0.1"),
        ("'a\"b'", r#""a\"b""#),
        ("`a\nb`", r#""a\nb""#),
        (
            "sum by (\"a.b\", inf_x) (x)",
            r#"sum by ("a.b", inf_x) (x)"#,
        ),
        ("sum by (\"inf\") (x)", r#"sum by ("inf") (x)"#),
        ("foo[step() + 1m]", "foo[step() + 1m]"),
        (
            "foo offset min_of(step(), 1h)",
            "foo offset min_of(step(), 1h)",
        ),
        ("foo offset -(step() * 2)", "foo offset -(step() * 2)"),
        ("foo offset (step() * 2)", "foo offset (step() * 2)"),
        (
            "count_over_time(x[5m] anchored)",
            "count_over_time(x[5m] anchored)",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(print(input), expected, "{input}");
        ok_round_trip(input);
    }
}

#[test]
fn printing_hand_built_trees_adds_needed_parentheses() {
    let sum = binary(BinaryOp::Add, vs("a"), vs("b"));
    let product = binary(BinaryOp::Mul, sum.clone(), vs("c"));
    assert_eq!(product.to_string(), "(a + b) * c");
    let difference = binary(
        BinaryOp::Sub,
        vs("a"),
        binary(BinaryOp::Sub, vs("b"), vs("c")),
    );
    assert_eq!(difference.to_string(), "a - (b - c)");
    let power = binary(
        BinaryOp::Pow,
        binary(BinaryOp::Pow, vs("a"), vs("b")),
        vs("c"),
    );
    assert_eq!(power.to_string(), "(a ^ b) ^ c");
    let negated = Expr::Unary(Unary {
        op: UnaryOp::Neg,
        expr: Box::new(sum.clone()),
    });
    assert_eq!(negated.to_string(), "-(a + b)");
    let subquery = Expr::Subquery(Subquery {
        expr: Box::new(sum),
        range_ms: 60_000,
        range_expr: None,
        step_ms: None,
        step_expr: None,
        offset: None,
        offset_expr: None,
        at: None,
    });
    assert_eq!(subquery.to_string(), "(a + b)[1m:]");
    for expr in [product, difference, power, negated, subquery] {
        let printed = expr.to_string();
        assert_eq!(parse(&printed).unwrap().to_string(), printed);
    }
}

// ----- match[] selectors -----

#[test]
fn series_selectors() {
    let matchers = parse_matchers(r#"up{job="x"}"#).unwrap();
    assert_eq!(
        matchers,
        vec![Matcher::equal("__name__", "up"), Matcher::equal("job", "x")]
    );
    let matchers = parse_matchers(r#"{__name__=~"a.*"}"#).unwrap();
    assert_eq!(matchers[0].kind(), MatchKind::Regex);
    assert_eq!(parse_matchers("jvm.gc.count").unwrap().len(), 1);
    assert_eq!(parse_matchers("sum").unwrap().len(), 1);
    assert_eq!(
        parse_matchers(r#"{"service.name"="a", "my.metric"}"#).unwrap()[1],
        Matcher::equal("__name__", "my.metric")
    );
    assert_eq!(
        parse_matchers("{}").unwrap_err().message,
        "vector selector must contain at least one non-empty matcher"
    );
    assert_eq!(
        parse_matchers("").unwrap_err().message,
        "no expression found in input"
    );
    assert_eq!(
        parse_matchers(r#"up{job="x"} + 1"#).unwrap_err().message,
        "unexpected <op:+>"
    );
    assert_eq!(
        parse_matchers("up offset 5m").unwrap_err().message,
        "unexpected <offset>"
    );
    assert_eq!(
        parse_matchers("rate(x[5m])").unwrap_err().message,
        "unexpected \"(\""
    );
    assert!(parse_matchers("bool").is_err());
}
