// The kinds the fake API server serves: their wire names, the URL paths that address them, and
// the namespace/name key each object is stored under.
import type { KubeObject, ObjectKind, ObjectMeta } from '../../../src/model/k8s.js';

export type Meta = ObjectMeta & { creationTimestamp?: string };

interface KindInfo {
  plural: string;
  apiVersion: string;
  listKind: string;
  namespaced: boolean;
}

export const KINDS: Record<ObjectKind, KindInfo> = {
  Service: { plural: 'services', apiVersion: 'v1', listKind: 'ServiceList', namespaced: true },
  EndpointSlice: {
    plural: 'endpointslices',
    apiVersion: 'discovery.k8s.io/v1',
    listKind: 'EndpointSliceList',
    namespaced: true,
  },
  Node: { plural: 'nodes', apiVersion: 'v1', listKind: 'NodeList', namespaced: false },
};

export function keyOf(obj: KubeObject): string {
  return `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;
}

export interface Route {
  kind: ObjectKind;
  namespace: string | undefined;
  name: string | undefined;
}

export function route(pathname: string): Route | undefined {
  const parts = pathname.split('/').filter((p) => p !== '');
  let rest: string[];
  if (parts[0] === 'api' && parts[1] === 'v1') rest = parts.slice(2);
  else if (parts[0] === 'apis' && parts[1] === 'discovery.k8s.io' && parts[2] === 'v1') rest = parts.slice(3);
  else return undefined;
  const groupVersion = parts[0] === 'api' ? 'v1' : 'discovery.k8s.io/v1';
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    namespace = decodeURIComponent(rest[1]!);
    rest = rest.slice(2);
  }
  if (rest.length < 1 || rest.length > 2) return undefined;
  const kind = (Object.keys(KINDS) as ObjectKind[]).find(
    (k) => KINDS[k].plural === rest[0] && KINDS[k].apiVersion === groupVersion,
  );
  if (!kind) return undefined;
  if (namespace !== undefined && !KINDS[kind].namespaced) return undefined;
  return { kind, namespace, name: rest[1] !== undefined ? decodeURIComponent(rest[1]) : undefined };
}
