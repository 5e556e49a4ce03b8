// The console's own script: served as a file, never inline (the pages' policy forbids inline
// script). htmx does the rest. Everything written into the page goes through textContent, so a
// name such as "<script>" stays text.
"use strict";

// After htmx swaps in an error page, move focus to it so keyboard users hear it.
document.addEventListener("htmx:afterSwap", (event) => {
  const flash = document.getElementById("flash");
  if (flash && event.detail.target === flash) {
    flash.focus();
  }
});

// The decisions page's live feed: a table with data-feed="<URL of a text/event-stream>" gets
// each new decision prepended as a row, the same cells as the server's rows, at most data-cap
// rows kept. Every cell is written with textContent. The browser reconnects by itself when a
// stream ends; data-status names the element that says how the feed is doing.
(() => {
  const table = document.querySelector("table[data-feed]");
  if (!table || typeof EventSource === "undefined") {
    return;
  }
  const body = table.tBodies[0];
  const cap = Number(table.dataset.cap) || 200;
  const status = document.getElementById(table.dataset.status || "");
  const say = (text) => {
    if (status && status.textContent !== text) {
      status.textContent = text;
    }
  };

  const cell = (text, className) => {
    const td = document.createElement("td");
    if (className) {
      td.className = className;
    }
    td.textContent = text || "—";
    return td;
  };

  const row = (decision) => {
    const tr = document.createElement("tr");
    const when = document.createElement("time");
    const iso = String(decision.time || "");
    when.dateTime = iso;
    when.textContent = iso.slice(0, 19).replace("T", " ");
    const timeCell = document.createElement("td");
    timeCell.appendChild(when);
    tr.appendChild(timeCell);
    tr.appendChild(cell(decision.agent));
    tr.appendChild(cell(decision.user));
    tr.appendChild(cell(decision.action));
    tr.appendChild(cell(decision.resource, "code"));
    const badge = document.createElement("span");
    const effect = String(decision.effect || "");
    badge.className = /^[a-z_]+$/.test(effect) ? `badge ${effect}` : "badge";
    badge.textContent = effect || "—";
    const effectCell = document.createElement("td");
    effectCell.appendChild(badge);
    tr.appendChild(effectCell);
    tr.appendChild(cell(decision.decision_id, "code"));
    const traceCell = document.createElement("td");
    const trace = String(decision.trace || "");
    if (trace.startsWith("/console/audit?")) {
      const link = document.createElement("a");
      link.href = trace;
      link.textContent = "Trace";
      link.setAttribute("aria-label", `Trace of ${decision.decision_id || "this decision"}`);
      traceCell.appendChild(link);
    } else {
      traceCell.textContent = "—";
    }
    tr.appendChild(traceCell);
    return tr;
  };

  const show = (decision) => {
    const empty = body.querySelector("tr[data-empty]");
    if (empty) {
      empty.remove();
    }
    body.insertBefore(row(decision), body.firstChild);
    while (body.rows.length > cap) {
      body.deleteRow(body.rows.length - 1);
    }
  };

  const listen = () => {
    const feed = new EventSource(table.dataset.feed);
    // Each stream ends after a while and the browser opens the next one at once: only a
    // reconnection that takes a while is worth telling (the status is read out).
    let slow = 0;
    feed.addEventListener("open", () => {
      window.clearTimeout(slow);
      say("Live feed: on. New decisions appear at the top.");
    });
    feed.addEventListener("error", () => {
      window.clearTimeout(slow);
      if (feed.readyState === EventSource.CLOSED) {
        say("Live feed: stopped. Reload the page to start it again.");
      } else {
        slow = window.setTimeout(() => say("Live feed: reconnecting…"), 5000);
      }
    });
    feed.addEventListener("gap", (event) => {
      const { dropped } = JSON.parse(event.data);
      say(`Live feed: on, but ${dropped} decisions came too fast to show. Reload for them all.`);
    });
    feed.addEventListener("message", (event) => show(JSON.parse(event.data)));
  };

  // Opened once the page has loaded: a stream opened earlier would keep it "loading".
  if (document.readyState === "complete") {
    listen();
  } else {
    window.addEventListener("load", listen, { once: true });
  }
})();
