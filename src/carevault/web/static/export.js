// "Export everything" with its progress: the record is read as it streams (the server sends
// how many documents it holds in X-Export-Documents), counted as each document's content
// arrives, and saved once complete. Without this script the link downloads the same file.
"use strict";
(function () {
  const link = document.getElementById("export");
  if (!link || !window.fetch || !window.TextDecoder) {
    return;
  }
  const bar = document.getElementById("export-progress");
  const status = document.getElementById("export-status");
  const MARKER = '"resourceType":"Binary"';

  function say(template, done, total) {
    status.textContent = template.replace("{done}", done).replace("{total}", total);
  }

  link.addEventListener("click", async function (event) {
    event.preventDefault();
    link.setAttribute("aria-disabled", "true");
    try {
      const response = await fetch(link.href, {credentials: "same-origin"});
      if (!response.ok || !response.body) {
        throw new Error(String(response.status));
      }
      const total = Number(response.headers.get("X-Export-Documents") || "0");
      const name = (/filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "")
                    || [null, "record.json"])[1];
      bar.max = Math.max(total, 1);
      bar.value = 0;
      bar.hidden = false;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const chunks = [];
      let tail = "";
      let done = 0;
      say(link.dataset.progress, done, total);
      for (;;) {
        const part = await reader.read();
        if (part.done) {
          break;
        }
        chunks.push(part.value);
        // Count the documents' contents, a marker split between two chunks included.
        const text = tail + decoder.decode(part.value, {stream: true});
        done += text.split(MARKER).length - 1;
        tail = text.slice(-(MARKER.length - 1));
        bar.value = Math.min(done, bar.max);
        say(link.dataset.progress, done, total);
      }
      const blob = new Blob(chunks, {type: "application/fhir+json"});
      JSON.parse(await blob.text());  // an interrupted stream does not parse: say so
      const save = document.createElement("a");
      save.href = URL.createObjectURL(blob);
      save.download = name;
      document.body.appendChild(save);
      save.click();
      save.remove();
      setTimeout(function () { URL.revokeObjectURL(save.href); }, 60000);
      bar.value = bar.max;
      say(link.dataset.done, done, total);
    } catch (error) {
      status.textContent = link.dataset.failed;
    } finally {
      link.removeAttribute("aria-disabled");
    }
  });
})();
