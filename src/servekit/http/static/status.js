// The status page: polls status.json (servekit.http.pages) every 2 s and draws one row per
// model version. Only this server is asked (relative URLs, so a proxy prefix works); text is
// set with textContent, never parsed as HTML, since model names and reasons come from files.
"use strict";

const REFRESH_MS = 2000;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function figure(value, digits) {
  if (value === null || value === undefined) return "–";
  if (Math.abs(value) >= 100) return value.toFixed(0);
  return value.toFixed(digits);
}

function link(id, href, text) {
  const old = document.getElementById(id);
  const fresh = href ? element("a", null, text) : element("span", null, text);
  if (href) fresh.href = href;
  fresh.id = id;
  old.replaceWith(fresh);
}

function drawLinks(links) {
  if (links.metrics_port) {
    const url = `${links.metrics_scheme}://${location.hostname}:${links.metrics_port}/metrics`;
    link("link-metrics", url, `metrics (:${links.metrics_port})`);
  } else {
    link("link-metrics", null, "metrics: off");
  }
  if (links.docs_site) link("link-docs-site", links.docs_site, "docs site");
  else link("link-docs-site", null, "docs site: not configured (--docs-site-url)");
}

function versionCell(row) {
  const cell = element("td", "version");
  const name = row.label && row.label !== row.version ? `${row.label} (v${row.version})` : row.version;
  cell.append(element("span", null, name === null ? "–" : name));
  if (row.default) cell.append(element("span", "tag", "default"));
  if (row.traffic_percent !== null && row.traffic_percent !== undefined) {
    cell.append(element("span", "tag", `${row.traffic_percent}% traffic`));
  }
  return cell;
}

function drawRow(body, row) {
  const tr = element("tr");
  tr.dataset.model = row.model;
  tr.dataset.version = row.version === null ? "" : row.version;
  tr.dataset.state = row.state;
  const loaded = row.runtime !== undefined;
  const batch = !loaded ? "–"
    : row.max_batch_size ? `${figure(row.mean_batch_size, 1)} / ${row.max_batch_size}` : "no batching";
  tr.append(
    element("td", "model", row.model),
    versionCell(row),
    element("td", `state state-${row.state}`, row.state),
    element("td", "number requests-per-s", loaded ? figure(row.requests_per_s, 1) : "–"),
    element("td", "number failures-per-s", loaded ? figure(row.failures_per_s, 1) : "–"),
    element("td", "number p50-ms", figure(row.p50_ms, 2)),
    element("td", "number p99-ms", figure(row.p99_ms, 2)),
    element("td", "number batch-size", batch),
    element("td", "number queue-depth", loaded ? row.queue_depth : "–"),
    element("td", "number instances", loaded ? `${row.busy_instances} busy / ${row.instances}` : "–"),
    element("td", "runtime", loaded ? `${row.runtime} · ${row.device}` : "–"),
  );
  body.append(tr);
  if (row.reason) {
    const detail = element("tr", "detail");
    const cell = element("td", "reason", row.reason);
    cell.colSpan = 11;
    detail.append(cell);
    body.append(detail);
  }
}

function draw(status) {
  document.getElementById("server-version").textContent = status.server.version;
  const badge = document.getElementById("server-state");
  badge.textContent = status.ready ? "ready" : "not ready";
  badge.className = `badge ${status.ready ? "ready" : "draining"}`;
  document.getElementById("problem").hidden = true;
  drawLinks(status.links);
  const body = document.querySelector("#models tbody");
  body.replaceChildren();
  for (const row of status.models) drawRow(body, row);
  document.getElementById("empty").hidden = status.models.length > 0;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.getElementById("window").textContent =
    `rates and latencies over the last ${status.window_s} s, refreshed every ${REFRESH_MS / 1000} s`;
  const server = status.server;
  document.getElementById("worker").textContent = server.workers > 1
    ? `worker pid ${server.pid}, one of ${server.workers}: the figures are this worker's`
    : `pid ${server.pid}`;
}

function unreachable(reason) {
  const badge = document.getElementById("server-state");
  badge.textContent = "unreachable";
  badge.className = "badge down";
  const problem = document.getElementById("problem");
  problem.textContent = `The server did not answer status.json: ${reason}`;
  problem.hidden = false;
}

async function refresh() {
  try {
    const response = await fetch("status.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    draw(await response.json());
  } catch (error) {
    unreachable(error.message || String(error));
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
