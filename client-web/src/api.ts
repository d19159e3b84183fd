// One client for the whole app, built once at module level (never in a render). ctxd
// serves this app itself, so its own origin is the server; tonic-web speaks grpc-web.

import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { ContextService } from "./gen/ctxd/v1/context_service_pb";

const baseUrl = (import.meta.env.VITE_CTXD_URL as string | undefined) ?? window.location.origin;

export const ctxd = createClient(ContextService, createGrpcWebTransport({ baseUrl }));
