// Keyboard shortcuts. Queue: j/k move, Enter opens, x selects. Case: f/l/d label, n notes.
"use strict";
(function () {
  function typing(e) {
    const t = e.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }
  const rows = Array.from(document.querySelectorAll("tr[data-case]"));
  let at = -1;
  function move(to) {
    if (!rows.length) return;
    if (at >= 0) rows[at].classList.remove("current");
    at = Math.max(0, Math.min(rows.length - 1, to));
    rows[at].classList.add("current");
    rows[at].scrollIntoView({ block: "nearest" });
  }
  const label = document.getElementById("label");
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (typing(e)) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (rows.length) {
      if (e.key === "j") { move(at + 1); e.preventDefault(); }
      else if (e.key === "k") { move(at - 1); e.preventDefault(); }
      else if (e.key === "Enter" && at >= 0) { rows[at].querySelector("a").click(); e.preventDefault(); }
      else if (e.key === "x" && at >= 0) {
        const box = rows[at].querySelector("input[type=checkbox]");
        if (box) box.checked = !box.checked;
        e.preventDefault();
      }
    }
    if (label) {
      const button = label.querySelector("button[data-key='" + e.key + "']");
      if (button) { label.requestSubmit(button); e.preventDefault(); }
      else if (e.key === "n") { document.getElementById("note").focus(); e.preventDefault(); }
    }
  });
})();
