// The mesh tests again with pages spread over two nodes of one cluster: two
// servers sharing a redis-server this file starts, each page connecting to
// the next node in turn, so that every group spans both nodes.
import { useNodes } from './harness.mjs';

useNodes(2);
await import('./mesh.test.mjs');
