// Snapkeeper UI: progressive enhancements only; every page renders without this script.
"use strict";

function csrf() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": csrf() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : (typeof body === "string" ? body : JSON.stringify(body)),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  return { status: response.status, data };
}

function text(tag, content, className) {
  const element = document.createElement(tag);
  element.textContent = content;
  if (className) element.className = className;
  return element;
}

// --- live run progress (runs page and run page) ---------------------------------------------

function setProgress(pct) {
  const bar = document.getElementById("run-progress");
  const label = document.getElementById("run-pct");
  const value = Math.max(0, Math.min(100, Math.round(pct)));
  if (bar) bar.value = value;
  if (label) label.textContent = value + "%";
}

function setStep(step) {
  const item = document.querySelector('#run-steps li[data-step="' + step.key + '"]');
  if (!item) return;
  item.className = step.status;
  const state = item.querySelector(".state");
  if (state) state.textContent = step.status;
}

function showRun(run) {
  setProgress(run.progress_pct);
  (run.steps || []).forEach(setStep);
  const status = document.getElementById("run-status");
  if (status) { status.textContent = run.status; status.className = "badge " + run.status; }
  const created = document.getElementById("run-created");
  if (created) created.textContent = run.snapshots_created;
  const batches = document.getElementById("run-batches");
  if (batches) batches.textContent = run.completed_batches + "/" + run.total_batches;
}

function follow(jobId, onFinished) {
  const message = document.getElementById("run-now-message");
  const eta = document.getElementById("run-eta");
  const source = new EventSource("/api/snapshot/runs/" + encodeURIComponent(jobId) + "/events");
  const parse = (event) => JSON.parse(event.data);
  source.addEventListener("snapshot", (e) => { const run = parse(e); showRun(run); if (message) message.textContent = "Run " + run.status; });
  source.addEventListener("step_changed", (e) => setStep(parse(e)));
  source.addEventListener("progress", (e) => {
    const p = parse(e);
    setProgress(p.progress_pct);
    if (eta) eta.textContent = p.estimated_finish_at ? "Estimated finish " + p.estimated_finish_at : "";
    if (message) message.textContent = "Running: " + p.current_step + " (" + p.completed_batches + "/" + p.total_batches + " batches)";
  });
  source.addEventListener("batch_finished", (e) => {
    const b = parse(e);
    const batches = document.getElementById("run-batches");
    if (batches) batches.textContent = b.batch_number + " finished";
  });
  source.addEventListener("run_finished", (e) => {
    const run = parse(e);
    showRun(run);
    if (message) message.textContent = "Run " + run.status;
    if (eta) eta.textContent = "";
    source.close();
    if (onFinished) onFinished(run);
  });
  source.addEventListener("error", () => {
    // The browser reconnects with Last-Event-ID on its own; after the end the server closes.
    if (source.readyState === EventSource.CLOSED && message) message.textContent = "Live updates stopped; reload to refresh.";
  });
}

function setUpRuns() {
  const panel = document.getElementById("run-now-panel");
  if (!panel) return;
  const button = document.getElementById("run-now");
  const message = document.getElementById("run-now-message");
  const done = () => { if (button) button.disabled = false; };
  if (panel.dataset.job && panel.dataset.active === "true") {
    if (button) button.disabled = true;
    follow(panel.dataset.job, done);
  }
  if (!button) return;
  button.addEventListener("click", async () => {
    button.disabled = true;
    document.querySelectorAll("#run-steps li").forEach((li) => { li.className = "pending"; const s = li.querySelector(".state"); if (s) s.textContent = "pending"; });
    setProgress(0);
    const { status, data } = await api("POST", "/api/snapshot/run-now");
    if (status === 202 || (status === 409 && data && data.job_id)) {
      if (message) message.textContent = status === 202 ? "Queued; starting…" : "A run is already active; following it.";
      follow(data.job_id, done);
    } else {
      if (message) message.textContent = "Could not start: " + (data && data.error ? data.error.message : status);
      done();
    }
  });
}

// --- explain box and rules --------------------------------------------------------------------

function setUpExplain() {
  const form = document.getElementById("explain-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("explain-result");
    out.replaceChildren(text("p", "Evaluating…", "muted"));
    const volumeId = document.getElementById("explain-volume").value.trim();
    const { status, data } = await api("POST", "/api/snapshot/evaluate", { volume_id: volumeId });
    out.replaceChildren();
    if (status !== 200) {
      out.append(text("p", (data && data.error ? data.error.message : "failed: " + status), "alert"));
      return;
    }
    out.append(text("p", data.summary, "summary"));
    const facts = text("p", "Decided by " + data.source + (data.matched_rule_name ? " (rule " + data.matched_rule_name + ")" : "") +
      "; enrolled: " + (data.enrolled ? "yes" : "no") + "; policies: " +
      (data.policies.map((p) => p.name + " keep " + p.retention_count).join(", ") || "none"));
    facts.id = "explain-decision";
    out.append(facts);
    const list = document.createElement("ol");
    list.setAttribute("aria-label", "Rules checked");
    data.rule_checks.forEach((c) => list.append(text("li", c.rule_name + " (priority " + c.priority + "): " + (c.matched ? "matched" : c.reason), c.matched ? "matched" : "")));
    out.append(list);
  });
}

function showProblems(out, status, data, okText) {
  out.replaceChildren();
  if (status === 200) { out.append(text("p", okText, "ok")); return; }
  out.append(text("p", data && data.error ? data.error.message : "failed: " + status, "alert"));
  if (data && data.problems) {
    const list = document.createElement("ul");
    data.problems.forEach((p) => list.append(text("li", (p.rule_name ? p.rule_name + " · " : "") + (p.key || p.path) + ": " + p.reason)));
    out.append(list);
  }
}

function setUpRules() {
  const documentBox = document.getElementById("rules-document");
  const out = document.getElementById("rules-result");
  const validate = document.getElementById("rules-validate");
  const save = document.getElementById("rules-save");
  if (validate) validate.addEventListener("click", async () => {
    const { status, data } = await api("POST", "/api/snapshot/rules/validate", documentBox.value);
    showProblems(out, status, data, status === 200 ? "Valid: " + data.rule_count + " rules." : "");
  });
  if (save) save.addEventListener("click", async () => {
    const { status, data } = await api("PUT", "/api/snapshot/rules", documentBox.value);
    showProblems(out, status, data, status === 200 ? "Saved as version " + data.active_version.version + "." : "");
  });
}

// --- policy sets, assignments, exclusions -----------------------------------------------------

function list(value) {
  return value.split(",").map((v) => v.trim()).filter((v) => v.length > 0);
}

// "daily_5=5, weekly_4=4" as {daily_5: 5, weekly_4: 4}; a bad pair is sent as is for the API to name.
function retention(value) {
  const out = {};
  list(value).forEach((pair) => {
    const [name, count] = pair.split("=").map((v) => v.trim());
    out[name] = /^\d+$/.test(count || "") ? Number(count) : count;
  });
  return out;
}

function report(out, status, data, okText) {
  out.replaceChildren();
  if (status >= 200 && status < 300) { out.append(text("p", okText, "ok")); return true; }
  const error = data && data.error;
  out.append(text("p", error ? error.message + (error.field ? " (" + error.field + ")" : "") : "failed: " + status, "alert"));
  return false;
}

function field(id) { return document.getElementById(id); }

function setUpEditors() {
  const setForm = field("set-form");
  if (setForm) {
    document.querySelectorAll(".edit-set").forEach((button) => button.addEventListener("click", () => {
      const d = button.dataset;
      field("set-id").value = d.id; field("set-name").value = d.name; field("set-description").value = d.description;
      field("set-global").checked = d.global === "true"; field("set-tenant").value = d.tenant;
      field("set-policies").value = d.policies; field("set-retention").value = d.retention;
      field("set-priority").value = d.priority; field("set-active").checked = d.active === "true";
      field("set-name").focus();
    }));
    setForm.addEventListener("reset", () => { field("set-id").value = ""; });
    setForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const id = field("set-id").value;
      const global = field("set-global").checked;
      const body = {
        name: field("set-name").value.trim(), description: field("set-description").value,
        is_global: global, policies: list(field("set-policies").value),
        retention_map: retention(field("set-retention").value),
        priority: Number(field("set-priority").value || 0), is_active: field("set-active").checked,
      };
      if (!global) body.tenant_id = field("set-tenant").value.trim();
      const { status, data } = id
        ? await api("PATCH", "/api/snapshot/policy-sets/" + encodeURIComponent(id), body)
        : await api("POST", "/api/snapshot/policy-sets", body);
      if (report(field("set-result"), status, data, "Saved policy set " + (data && data.name) + ".")) window.location.reload();
    });
  }
  const assignmentForm = field("assignment-form");
  if (assignmentForm) {
    document.querySelectorAll(".edit-assignment").forEach((button) => button.addEventListener("click", () => {
      const d = button.dataset;
      field("assignment-editing").value = d.volume; field("assignment-volume").value = d.volume;
      field("assignment-project").value = d.project; field("assignment-policies").value = d.policies;
      field("assignment-retention").value = d.retention; field("assignment-auto").checked = d.auto === "true";
      field("assignment-policies").focus();
    }));
    assignmentForm.addEventListener("reset", () => { field("assignment-editing").value = ""; });
    assignmentForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const editing = field("assignment-editing").value;
      const body = {
        policies: list(field("assignment-policies").value),
        retention_map: retention(field("assignment-retention").value),
        auto_snapshot: field("assignment-auto").checked,
      };
      let result;
      if (editing) {
        result = await api("PATCH", "/api/snapshot/assignments/" + encodeURIComponent(editing), body);
      } else {
        body.volume_id = field("assignment-volume").value.trim();
        body.project_id = field("assignment-project").value.trim();
        result = await api("POST", "/api/snapshot/assignments", body);
      }
      if (report(field("assignment-result"), result.status, result.data, "Saved.")) window.location.reload();
    });
  }
  const exclusionForm = field("exclusion-form");
  if (exclusionForm) exclusionForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { volume_id: field("exclusion-volume").value.trim() };
    const project = field("exclusion-project").value.trim();
    const reason = field("exclusion-reason").value.trim();
    const expires = field("exclusion-expires").value;
    if (project) body.project_id = project;
    if (reason) body.exclusion_reason = reason;
    if (expires) body.expires_at = expires;
    const { status, data } = await api("POST", "/api/snapshot/exclusions", body);
    if (report(field("exclusion-result"), status, data, "Excluded.")) window.location.reload();
  });
  document.querySelectorAll("button.delete").forEach((button) => button.addEventListener("click", async () => {
    if (!window.confirm(button.getAttribute("aria-label") + "?")) return;
    const { status, data } = await api("DELETE", button.dataset.path);
    if (status === 204) { window.location.reload(); return; }
    window.alert(data && data.error ? data.error.message : "failed: " + status);
  }));
}

document.addEventListener("DOMContentLoaded", () => { setUpRuns(); setUpExplain(); setUpRules(); setUpEditors(); });
