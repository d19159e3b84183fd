// One client for the whole app, built once at module level (never in a render). ctxd
// serves this app itself, so its own origin is the server; tonic-web speaks grpc-web.
// Every call and stream carries the saved credential, if there is one.

import { type Interceptor, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { currentToken } from "./credentials";
import { ContextService } from "./gen/ctxd/v1/context_service_pb";

const baseUrl = (import.meta.env.VITE_CTXD_URL as string | undefined) ?? window.location.origin;

const withCredential: Interceptor = (next) => (request) => {
  const token = currentToken();
  if (token) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};

export const ctxd = createClient(ContextService, createGrpcWebTransport({ baseUrl, interceptors: [withCredential] }));
