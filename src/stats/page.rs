//! The status page: one self-contained HTML document, rendered on the server from endpoint
//! snapshots, with a little plain JavaScript that refreshes it.
//!
//! Nothing is fetched from outside (no framework, font, or CDN): the page works on an
//! air-gapped host and leaks nothing to third parties. It shows, per endpoint, its health,
//! breaker state, queue depth (held in memory and not yet read), delivery lag and round-trip percentiles, and a
//! small chart of events delivered and failed per second over the last five minutes. The
//! server renders the first view; every second the script fetches the snapshots again as
//! JSON (the same [`EndpointSnapshot`] serialisation the admin API returns), updates every
//! figure in place, and adds a point to the chart from the counters' differences.
//!
//! Each figure is in an element with `data-endpoint` and `data-field` attributes, so a test
//! (or a person with the browser's inspector) can read what the page shows and compare it
//! with the API.

use std::fmt::Write as _;

use super::EndpointSnapshot;

/// Renders the status page for `endpoints`; its script refreshes from `api` (a URL path that
/// answers `GET` with a JSON array of [`EndpointSnapshot`]s, e.g. `/v1/endpoints`).
///
/// ```
/// let html = hookwire::stats::render_status_page(&[], "/v1/endpoints");
/// assert!(html.starts_with("<!DOCTYPE html>") && html.contains("/v1/endpoints"));
/// assert!(!html.contains("src=\"http") && !html.contains("href=\"http")); // nothing fetched from outside
/// ```
pub fn render_status_page(endpoints: &[EndpointSnapshot], api: &str) -> String {
    let mut rows = String::new();
    for ep in endpoints {
        rows.push_str(&row(ep));
    }
    if endpoints.is_empty() {
        rows.push_str(r#"<tr class="none"><td colspan="9">no endpoints</td></tr>"#);
    }
    PAGE.replace("{{ROWS}}", &rows)
        .replace("{{API}}", &script_string(api))
        .replace("{{VERSION}}", env!("CARGO_PKG_VERSION"))
}

/// One endpoint's row. Every figure the script updates has `data-field`.
fn row(ep: &EndpointSnapshot) -> String {
    let m = &ep.metrics;
    let name = escape(&ep.name);
    let (health, class) = health(ep);
    let breaker = match (&ep.health.breaker, m.disabled) {
        (Some(b), _) => escape(b),
        (None, true) => "disabled".into(),
        (None, false) => "-".into(),
    };
    let mut r = String::new();
    let _ = write!(
        r,
        r#"<tr data-endpoint="{name}"><td class="name" title="{url}">{name}</td>"#,
        url = escape(&ep.url)
    );
    let _ = write!(
        r,
        r#"<td data-field="health" class="{class}">{}</td>"#,
        escape(&health)
    );
    let _ = write!(r, r#"<td data-field="breaker">{breaker}</td>"#);
    for (field, value) in [
        ("queue_depth", m.queued + m.unread),
        ("delivered", m.delivered),
        ("failed", m.failures + m.errors),
        ("lag_p99_us", m.delivery_lag.p99_us),
        ("rtt_p50_us", m.rtt.p50_us),
        ("rtt_p99_us", m.rtt.p99_us),
    ] {
        let _ = write!(
            r,
            r#"<td data-field="{field}" class="num" data-value="{value}">{}</td>"#,
            human(field, value)
        );
    }
    r.push_str("</tr>\n");
    r
}

/// The endpoint's health in words, and a CSS class.
fn health(ep: &EndpointSnapshot) -> (String, &'static str) {
    if let Some(f) = &ep.health.failed {
        (format!("failed: {f}"), "bad")
    } else if let Some(d) = &ep.health.disabled {
        (format!("disabled: {d}"), "bad")
    } else if ep.metrics.pending > 0 && ep.health.last_error.is_some() {
        ("retrying".into(), "warn")
    } else {
        ("healthy".into(), "ok")
    }
}

/// A figure as a person reads it: counts as they are, microseconds as us/ms/s.
fn human(field: &str, v: u64) -> String {
    if !field.ends_with("_us") {
        return v.to_string();
    }
    match v {
        0..1_000 => format!("{v} us"),
        1_000..1_000_000 => format!("{:.1} ms", v as f64 / 1e3),
        _ => format!("{:.2} s", v as f64 / 1e6),
    }
}

/// `s` as a JavaScript string literal that is safe inside `<script>`: JSON, with `<` escaped
/// so no `</script>` can end the block.
fn script_string(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_else(|_| "\"\"".into())
        .replace('<', "\\u003c")
}

/// Escapes text for HTML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page. `{{ROWS}}`, `{{API}}` (a script-safe JS string literal) and `{{VERSION}}` are filled
/// in; the script repeats `row`'s rules (health words, units) for refreshed figures.
const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hookwire status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  .sub { color: #666; margin-bottom: 1em; }
  table { border-collapse: collapse; min-width: 60em; }
  th, td { padding: .35em .7em; border-bottom: 1px solid #ddd; text-align: left; }
  th { background: #f4f4f4; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .ok { color: #11772d; } .warn { color: #9a6700; } .bad { color: #b3261e; font-weight: 600; }
  #chart { margin-top: 1.2em; border: 1px solid #ddd; background: #fcfcfc; }
  .legend span { display: inline-block; margin-right: 1.2em; }
  .sw { display: inline-block; width: .9em; height: .9em; vertical-align: -1px; margin-right: .3em; }
  #updated { color: #666; }
</style>
</head>
<body>
<h1>hookwire status</h1>
<div class="sub">hookwire {{VERSION}} &middot; <span id="updated">rendered by the server</span></div>
<table id="endpoints">
<thead><tr><th>endpoint</th><th>health</th><th>breaker</th><th>queue depth</th><th>delivered</th>
<th>failed</th><th>lag p99</th><th>rtt p50</th><th>rtt p99</th></tr></thead>
<tbody>
{{ROWS}}</tbody>
</table>
<div class="legend" style="margin-top:1em">
  <span><i class="sw" style="background:#2e7d32"></i>delivered/s</span>
  <span><i class="sw" style="background:#c62828"></i>failed/s</span>
  <span id="rate"></span>
</div>
<svg id="chart" width="720" height="160" viewBox="0 0 720 160" role="img"
     aria-label="events delivered and failed per second, last five minutes"></svg>
<script>
"use strict";
(function () {
  var API = {{API}};
  var KEEP = 300, points = [], last = null;
  function human(field, v) {
    if (!/_us$/.test(field)) return String(v);
    if (v < 1000) return v + " us";
    if (v < 1000000) return (v / 1000).toFixed(1) + " ms";
    return (v / 1000000).toFixed(2) + " s";
  }
  function health(ep) {
    var h = ep.health || {}, m = ep.metrics;
    if (h.failed) return ["failed: " + h.failed, "bad"];
    if (h.disabled) return ["disabled: " + h.disabled, "bad"];
    if (m.pending > 0 && h.last_error) return ["retrying", "warn"];
    return ["healthy", "ok"];
  }
  function figures(ep) {
    var m = ep.metrics;
    return {
      queue_depth: m.queued + m.unread, delivered: m.delivered, failed: m.failures + m.errors,
      lag_p99_us: m.delivery_lag.p99_us, rtt_p50_us: m.rtt.p50_us, rtt_p99_us: m.rtt.p99_us
    };
  }
  function set(row, field, value, text) {
    var td = row.querySelector('[data-field="' + field + '"]');
    if (!td) return;
    if (value !== null) td.setAttribute("data-value", String(value));
    td.textContent = text;
  }
  function update(eps) {
    var body = document.querySelector("#endpoints tbody");
    var delivered = 0, failed = 0;
    eps.forEach(function (ep) {
      var row = null;
      body.querySelectorAll("tr[data-endpoint]").forEach(function (r) {
        if (r.getAttribute("data-endpoint") === ep.name) row = r;
      });
      if (!row) {
        var none = body.querySelector("tr.none"); if (none) none.remove();
        row = document.createElement("tr");
        row.setAttribute("data-endpoint", ep.name);
        var cells = ["name", "health", "breaker", "queue_depth", "delivered", "failed",
                     "lag_p99_us", "rtt_p50_us", "rtt_p99_us"];
        cells.forEach(function (f, i) {
          var td = document.createElement("td");
          if (i === 0) { td.className = "name"; td.textContent = ep.name; td.title = ep.url; }
          else { td.setAttribute("data-field", f); if (i > 2) td.className = "num"; }
          row.appendChild(td);
        });
        body.appendChild(row);
      }
      var h = health(ep);
      set(row, "health", null, h[0]);
      row.querySelector('[data-field="health"]').className = h[1];
      var b = (ep.health && ep.health.breaker) || (ep.metrics.disabled ? "disabled" : "-");
      set(row, "breaker", null, b);
      var f = figures(ep);
      Object.keys(f).forEach(function (k) { set(row, k, f[k], human(k, f[k])); });
      delivered += f.delivered; failed += f.failed;
    });
    var now = Date.now();
    if (last) {
      var secs = Math.max((now - last.at) / 1000, 0.001);
      points.push({ d: Math.max(delivered - last.delivered, 0) / secs,
                    f: Math.max(failed - last.failed, 0) / secs });
      if (points.length > KEEP) points.shift();
      var p = points[points.length - 1];
      document.getElementById("rate").textContent =
        "now: " + Math.round(p.d) + " delivered/s, " + Math.round(p.f) + " failed/s";
    }
    last = { at: now, delivered: delivered, failed: failed };
    draw();
    document.getElementById("updated").textContent =
      "updated " + new Date(now).toLocaleTimeString();
    document.body.setAttribute("data-refreshed", String(now));
  }
  function draw() {
    var svg = document.getElementById("chart"), W = 720, H = 160, NS = "http://www.w3.org/2000/svg";
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var max = 1;
    points.forEach(function (p) { max = Math.max(max, p.d, p.f); });
    var step = W / KEEP;
    function line(key, color) {
      var d = "";
      points.forEach(function (p, i) {
        var x = W - (points.length - i) * step, y = H - 4 - (p[key] / max) * (H - 20);
        d += (i ? " L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      });
      if (!d) return;
      var path = document.createElementNS(NS, "path");
      path.setAttribute("d", d); path.setAttribute("fill", "none");
      path.setAttribute("stroke", color); path.setAttribute("stroke-width", "2");
      svg.appendChild(path);
    }
    var label = document.createElementNS(NS, "text");
    label.setAttribute("x", "6"); label.setAttribute("y", "14");
    label.setAttribute("font-size", "11"); label.setAttribute("fill", "#666");
    label.textContent = "max " + Math.round(max) + "/s";
    svg.appendChild(label);
    line("d", "#2e7d32"); line("f", "#c62828");
  }
  function poll() {
    fetch(API, { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(update)
      .catch(function (e) { document.getElementById("updated").textContent = "refresh failed: " + e.message; })
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(name: &str, delivered: u64, pending: u64) -> EndpointSnapshot {
        let mut s = EndpointSnapshot {
            name: name.into(),
            url: "http://h/".into(),
            ..EndpointSnapshot::default()
        };
        s.metrics.delivered = delivered;
        s.metrics.pending = pending;
        s.metrics.queued = pending;
        s.metrics.rtt.p50_us = 1_500;
        s
    }

    #[test]
    fn renders_every_endpoints_figures_in_data_fields() {
        let mut bad = snapshot("<b>ad\"", 3, 7);
        bad.health.disabled = Some("410 Gone".into());
        bad.metrics.disabled = true;
        let html = render_status_page(&[snapshot("audit", 42, 0), bad], "/v1/endpoints");
        assert!(html.contains(r#"<tr data-endpoint="audit">"#), "{html}");
        assert!(html.contains(r#"data-field="delivered" class="num" data-value="42">42<"#));
        assert!(html.contains(r#"data-field="rtt_p50_us" class="num" data-value="1500">1.5 ms<"#));
        // Names are escaped, never markup.
        assert!(html.contains("&lt;b&gt;ad&quot;") && !html.contains("<b>ad"));
        assert!(html.contains(r#"class="bad">disabled: 410 Gone<"#));
        assert!(html.contains(r#"<td data-field="breaker">disabled</td>"#));
        // Self-contained: no external resource (the SVG namespace is an identifier, not a fetch).
        for needle in ["src=\"http", "href=\"http", "@import", "//cdn"] {
            assert!(!html.contains(needle), "{needle}");
        }
        assert!(render_status_page(&[], "/x").contains("no endpoints"));
        let html = render_status_page(&[], "/a</script><b>");
        assert!(
            html.contains(r#"var API = "/a\u003c/script>\u003cb>";"#),
            "{html}"
        );
    }

    #[test]
    fn units_follow_the_size() {
        assert_eq!(human("rtt_p50_us", 999), "999 us");
        assert_eq!(human("rtt_p50_us", 1_500), "1.5 ms");
        assert_eq!(human("lag_p99_us", 2_500_000), "2.50 s");
        assert_eq!(human("pending", 2_500_000), "2500000");
    }
}
