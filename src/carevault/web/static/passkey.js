// The passkey ceremonies (WebAuthn): the workspace's (/workspace/enrol, /workspace/login) and
// the patients' (/me/passkeys to add one, /login where one stands for the TOTP code).
// A file, not an inline script: the portal's CSP allows none. The server hands the options
// and checks the answers; the browser's own JSON (de)serialisation does the base64url.
"use strict";
(function () {
  function post(url, fields) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/x-www-form-urlencoded"},
      body: new URLSearchParams(fields).toString(),
    });
  }

  class Refused extends Error {}

  async function answer(response) {
    let body = {};
    try {
      body = await response.json();
    } catch (ignored) {
      body = {};
    }
    if (!response.ok) {
      throw new Refused(body.error || "");
    }
    return body;
  }

  function ceremony(form, run) {
    const status = form.querySelector(".passkey-status");
    const button = form.querySelector("button[type=submit]");
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      status.textContent = form.dataset.working;
      button.disabled = true;
      try {
        const next = await run(form, form.elements.csrf.value);
        window.location.assign(next);
      } catch (error) {
        status.textContent = (error instanceof Refused && error.message) || form.dataset.failed;
        button.disabled = false;
      }
    });
  }

  const signin = document.getElementById("passkey-signin");
  if (signin) {
    ceremony(signin, async function (form, csrf) {
      const options = await answer(await post(form.dataset.options, {csrf: csrf}));
      const credential = await navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options),
      });
      const done = await answer(await post(form.action, {
        csrf: csrf, credential: JSON.stringify(credential.toJSON()),
      }));
      return done.next;
    });
  }

  const enrol = document.getElementById("passkey-enrol");
  if (enrol) {
    ceremony(enrol, async function (form, csrf) {
      const options = await answer(await post(form.dataset.options, {
        csrf: csrf, code: form.elements.code.value,
      }));
      const credential = await navigator.credentials.create({
        publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
      });
      const done = await answer(await post(form.action, {
        csrf: csrf, credential: JSON.stringify(credential.toJSON()),
      }));
      return done.next;
    });
  }
  const add = document.getElementById("passkey-add");
  if (add) {
    ceremony(add, async function (form, csrf) {
      // The password again: an open session alone does not add a way to sign in.
      const options = await answer(await post(form.dataset.options, {
        csrf: csrf, password: form.elements.password.value,
      }));
      const credential = await navigator.credentials.create({
        publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
      });
      const done = await answer(await post(form.action, {
        csrf: csrf, credential: JSON.stringify(credential.toJSON()),
      }));
      return done.next;
    });
  }

  // At /login: the passkey replaces the code; the password is still typed, and both go
  // in the same form, checked together by the server.
  const second = document.getElementById("passkey-second");
  if (second && window.PublicKeyCredential) {
    const form = second.form;
    const status = document.getElementById("status");
    second.hidden = false;
    second.addEventListener("click", async function () {
      if (!form.elements.login.reportValidity() || !form.elements.password.reportValidity()) {
        return;
      }
      status.textContent = second.dataset.working;
      second.disabled = true;
      try {
        const options = await answer(await post(second.dataset.options, {
          csrf: form.elements.csrf.value,
        }));
        const credential = await navigator.credentials.get({
          publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options),
        });
        form.elements.passkey.value = JSON.stringify(credential.toJSON());
        form.elements.code.required = false;
        form.submit();
      } catch (error) {
        status.textContent = second.dataset.failed;
        second.disabled = false;
      }
    });
  }
})();
