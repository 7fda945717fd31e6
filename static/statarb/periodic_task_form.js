// The periodic task form of the admin: under the crontab field, the chosen crontab in words (django-celery-beat
// does this with an inline script, which the Content-Security-Policy blocks). Text only, never HTML.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    const data = document.getElementById("readable-crontabs");
    const select = document.getElementById("id_crontab");
    if (!data || !select) return;
    const readable = JSON.parse(data.textContent);
    const translation = document.querySelector(".field-crontab_translation");
    if (translation) translation.style.display = "none";
    const help = document.querySelector(".field-crontab .help");
    if (!help) return;
    const line = document.createElement("div");
    help.appendChild(line);
    function show() {
      const words = readable[select.value];
      line.textContent = words ? "Translation: " + words : "";
    }
    select.addEventListener("change", show);
    show();
  });
})();
