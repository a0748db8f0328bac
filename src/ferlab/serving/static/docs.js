// /docs: Swagger UI (vendored by scripts/vendor_web.py, no CDN) on this server's /openapi.json
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
});
