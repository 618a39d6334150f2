/// A plotly.js figure as an HTML fragment, for a notebook's HTML display: a div and a script that hands the figure's
/// JSON (traces and layout) to plotly.js. The notebook kernel (dotnet-repl) loads FSharp.Core 10.0, which Plotly.NET 6
/// cannot run on, so notebooks draw through this instead. The fragment uses `window.Plotly` when a page already has it
/// (see `library`), else require.js when the page has it (classic Jupyter), else loads plotly.js from its CDN once.
[<RequireQualifiedAccess>]
module MagnetWhisper.Core.Charts.PlotlyHtml

open System
open System.Text.Json
open System.Text.Json.Nodes

/// The plotly.js release the command line's reports embed (Plotly.NET 6), so notebooks and reports draw alike.
[<Literal>]
let CdnUrl = "https://cdn.plot.ly/plotly-2.28.0.min.js"

/// A JSON array of numbers for a trace; non-finite values become null, which plotly.js draws as a gap (JSON has no NaN).
let numbers (values: float seq) : JsonArray =
    JsonArray(values |> Seq.map (fun v -> if Double.IsFinite v then JsonValue.Create v :> JsonNode else null) |> Seq.toArray)

/// A JSON array of rows (a heatmap's z: one row per y).
let rows (values: float[][]) : JsonArray = JsonArray(values |> Array.map (fun row -> numbers row :> JsonNode))

/// The figure as plotly.js reads it: {"data": traces, "layout": layout}. The default encoder escapes <, > and & as
/// \u003C…, so no text in the figure can close the script it is embedded in.
let figureJson (traces: JsonNode seq) (layout: JsonObject) : string =
    let figure = JsonObject()
    figure.["data"] <- JsonArray(traces |> Seq.map (fun t -> if isNull t then nullArg "traces" else t.DeepClone()) |> Seq.toArray)
    figure.["layout"] <- layout.DeepClone()
    figure.ToJsonString(JsonSerializerOptions())

/// The HTML fragment drawing the figure into a new div with this element id (letters, digits, '-' and '_' only).
let figure (id: string) (traces: JsonNode seq) (layout: JsonObject) : string =
    if String.IsNullOrEmpty id || not (id |> Seq.forall (fun c -> Char.IsAsciiLetterOrDigit c || c = '-' || c = '_')) then
        invalidArg "id" $"a figure's element id is letters, digits, '-' and '_', got '{id}'"
    let json = figureJson traces layout
    // The loader is shared by every figure of a page: plotly.js is requested once however many figures wait for it.
    $"""<div id="{id}"></div>
<script type="text/javascript">
(function () {{
  var figure = {json};
  var draw = function (Plotly) {{ Plotly.newPlot("{id}", figure.data, figure.layout, {{ responsive: true }}); }};
  var fail = function () {{ document.getElementById("{id}").textContent = "plotly.js could not be loaded from {CdnUrl}"; }};
  if (window.Plotly) {{ draw(window.Plotly); return; }}
  if (typeof window.require === "function" && window.require.config) {{
    window.require.config({{ paths: {{ plotly: "{CdnUrl.Substring(0, CdnUrl.Length - 3)}" }} }});
    window.require(["plotly"], draw, fail);
    return;
  }}
  if (!window.magnetPlotly) {{
    window.magnetPlotly = new Promise(function (resolve, reject) {{
      var s = document.createElement("script");
      s.src = "{CdnUrl}";
      s.onload = function () {{ resolve(window.Plotly); }};
      s.onerror = reject;
      document.head.appendChild(s);
    }});
  }}
  window.magnetPlotly.then(draw, fail);
}})();
</script>"""

/// plotly.js itself as a script element (for pages that must draw offline); "</script" inside it is escaped so the
/// element cannot end early.
let library (plotlyJs: string) : string =
    if String.IsNullOrWhiteSpace plotlyJs then invalidArg "plotlyJs" "plotly.js is empty"
    "<script type=\"text/javascript\">\n" + plotlyJs.Replace("</script", "<\\/script", StringComparison.OrdinalIgnoreCase) + "\n</script>"
