// Starts the viewer once every view has registered itself. A file, not an inline <script>: the
// viewer's Content-Security-Policy allows scripts from its own origin only.
"use strict";
Corral.start();
