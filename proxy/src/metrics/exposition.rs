//! The two exposition formats: OpenMetrics 1.0 (what prometheus-client writes) for a
//! scraper that asks for it, the Prometheus text format 0.0.4 for everyone else.
//!
//! The formats differ only in their metadata lines: OpenMetrics names a counter family
//! without its `_total` suffix and ends with `# EOF`; 0.0.4 names the family as its
//! samples are named and has no `# EOF`. The sample lines are the same.

/// `Content-Type` of each format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (Prometheus sends it first, with the
/// highest weight; curl and browsers do not mention it). An explicit `q=0` refuses it.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or("");
        media.eq_ignore_ascii_case("application/openmetrics-text")
            && !params.any(|p| {
                p.split_once('=')
                    .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>() == Ok(0.0))
            })
    })
}

/// The Prometheus text 0.0.4 form of an OpenMetrics exposition.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + openmetrics.len() / 16);
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
            && kind == "counter"
        {
            counters.insert(name);
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find(|p| line.starts_with(p));
        match meta {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asks_for_openmetrics_and_curl_does_not() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(prometheus));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0, text/plain"));
        assert!(wants_openmetrics("Application/OpenMetrics-Text; q=0.5"));
    }

    #[test]
    fn counters_get_their_total_name_and_the_eof_goes() {
        let om = "# HELP weft_responses Responses.\n# TYPE weft_responses counter\nweft_responses_total{route=\"a\"} 1\n# HELP weft_open Open.\n# TYPE weft_open gauge\nweft_open 2\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP weft_responses_total Responses.\n# TYPE weft_responses_total counter\nweft_responses_total{route=\"a\"} 1\n# HELP weft_open Open.\n# TYPE weft_open gauge\nweft_open 2\n"
        );
    }
}
