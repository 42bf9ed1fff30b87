// The console's only script: live progress on a batch page. Polls the console's own progress
// endpoint (same origin, session cookie) until the batch is completed or failed.
"use strict";
(function () {
  const box = document.getElementById("batch-progress");
  if (!box || box.dataset.done === "true") return;
  const url = box.dataset.progressUrl;
  const live = box.querySelector(".live");
  const fmt = new Intl.NumberFormat("en-US");
  const set = (field, text) => {
    const el = box.querySelector('[data-field="' + field + '"]');
    if (el) el.textContent = text;
  };
  async function poll() {
    let data;
    try {
      const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) { live.textContent = "progress unavailable (" + r.status + ")"; return; }
      data = await r.json();
    } catch (e) {
      live.textContent = "progress unavailable, retrying";
      setTimeout(poll, 3000);
      return;
    }
    const status = box.querySelector('[data-field="status"]');
    status.textContent = data.status;
    status.className = "status " + data.status;
    box.querySelector("progress").value = data.progress;
    for (const f of ["rows", "processed", "posted", "duplicates", "rejected", "points_posted"]) set(f, fmt.format(data[f]));
    if (data.done) {
      box.dataset.done = "true";
      live.textContent = "finished; reload for the rejections";
    } else {
      live.textContent = "updating live";
      setTimeout(poll, 1000);
    }
  }
  poll();
})();
