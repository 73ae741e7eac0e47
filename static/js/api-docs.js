// /api/v1/docs: Swagger UI over the served document. A file, not an inline script: the page's CSP allows
// scripts from this origin only.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-openapi-url");
  window.SwaggerUIBundle({
    url: url,
    dom_id: "#swagger-ui",
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    // The key typed into "Authorize" stays in this tab only.
    persistAuthorization: false,
    // Try it out shows the curl command it ran, beside the examples in each description.
    requestSnippetsEnabled: true,
    // No call to validator.swagger.io (it would leave this origin, and the CSP refuses it anyway).
    validatorUrl: null,
    tryItOutEnabled: false,
  });
})();
