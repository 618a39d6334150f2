// The notebooks' figures: small builders of plotly.js traces on top of MagnetWhisper.Core.Charts.PlotlyHtml (tested
// in Core.Tests), shown with the notebook kernel's HTML display. Load after the assemblies: #load "Charts.fsx".
// A cell that draws starts with the line `// chart`: ./run-tests fails a notebook whose chart cell shows no figure.

#r "../src/Cli/bin/Release/net10.0/MagnetWhisper.Core.dll"

open System
open System.IO
open System.Text.Json.Nodes
open Microsoft.DotNet.Interactive.Formatting
open MagnetWhisper.Core.Charts

/// A JSON object from name/value pairs (values: JsonNode, string, int, float or bool).
let jobj (fields: (string * obj) list) : JsonObject =
    let o = JsonObject()
    for name, value in fields do
        o.[name] <-
            match value with
            | :? JsonNode as n -> n
            | :? string as s -> JsonValue.Create s
            | :? int as i -> JsonValue.Create i
            | :? float as f -> JsonValue.Create f
            | :? bool as b -> JsonValue.Create b
            | null -> null
            | other -> invalidArg name $"{other.GetType().Name} is not a JSON value here"
    o

let private figureCount = ref 0

/// Shows a figure in the cell's output.
let show (traces: JsonNode list) (layout: JsonObject) : unit =
    figureCount.Value <- figureCount.Value + 1
    let id = $"magnet-figure-{figureCount.Value}-{Guid.NewGuid():N}"
    HTML(PlotlyHtml.figure id traces layout) |> display |> ignore

/// plotly.js as the command line's Plotly.NET embeds it, shown once so that every later figure draws offline (in the
/// page the notebook's outputs share); without Plotly.NET.dll beside the assemblies, figures load it from the CDN.
let embedPlotly () : unit =
    let dll = Path.GetFullPath "../src/Cli/bin/Release/net10.0/Plotly.NET.dll"
    if File.Exists dll then
        // Only the manifest resources are read; nothing of Plotly.NET runs on this kernel's FSharp.Core.
        let assembly = Reflection.Assembly.LoadFile dll
        match assembly.GetManifestResourceNames() |> Array.tryFind (fun n -> n.EndsWith ".min.js") with
        | Some name ->
            use reader = new StreamReader(assembly.GetManifestResourceStream name)
            HTML(PlotlyHtml.library (reader.ReadToEnd())) |> display |> ignore
            printfn "plotly.js embedded from %s (%s)" (Path.GetFileName dll) name
        | None -> printfn "no plotly.js inside %s: figures load %s" dll PlotlyHtml.CdnUrl
    else printfn "figures load plotly.js from %s" PlotlyHtml.CdnUrl

/// A line (with markers) trace.
let line (name: string) (xs: float[]) (ys: float[]) : JsonNode =
    jobj [ "type", "scatter"; "mode", "lines+markers"; "name", name; "x", PlotlyHtml.numbers xs; "y", PlotlyHtml.numbers ys ]

/// Points with a text label each.
let labelled (name: string) (xs: float[]) (ys: float[]) (labels: string[]) : JsonNode =
    jobj [ "type", "scatter"; "mode", "lines+markers+text"; "textposition", "top center"; "name", name
           "x", PlotlyHtml.numbers xs; "y", PlotlyHtml.numbers ys; "text", JsonArray(labels |> Array.map (fun l -> JsonValue.Create l :> JsonNode)) ]

/// Bars.
let bars (name: string) (xs: float[]) (ys: float[]) : JsonNode =
    jobj [ "type", "bar"; "name", name; "x", PlotlyHtml.numbers xs; "y", PlotlyHtml.numbers ys ]

/// A heatmap of rows (one per y), x and y the coordinates of the columns and rows.
let heatmap (name: string) (xs: float[]) (ys: float[]) (z: float[][]) : JsonNode =
    jobj [ "type", "heatmap"; "name", name; "x", PlotlyHtml.numbers xs; "y", PlotlyHtml.numbers ys; "z", PlotlyHtml.rows z
           "colorscale", "Viridis"; "showscale", false ]

/// Vertical lines at the given x values from y0 to y1, as one legend entry (segments separated by gaps).
let verticals (name: string) (color: string) (dash: string) (xs: float[]) (y0: float) (y1: float) : JsonNode =
    let x = xs |> Array.collect (fun v -> [| v; v; nan |])
    let y = xs |> Array.collect (fun _ -> [| y0; y1; nan |])
    jobj [ "type", "scatter"; "mode", "lines"; "name", name; "x", PlotlyHtml.numbers x; "y", PlotlyHtml.numbers y
           "line", jobj [ "color", color; "width", 1.5; "dash", dash ] ]

/// The log-mel of one utterance as a heatmap: mel (n_mels rows × frames), 100 frames a second.
let logMel (mel: float[][]) : JsonNode =
    let frames = if mel.Length = 0 then 0 else mel.[0].Length
    // Two decimals of a log-mel (range about 2) are below what a colour scale shows, and keep the figure small.
    let rounded = mel |> Array.map (Array.map (fun v -> Math.Round(v, 2)))
    heatmap "log-mel" (Array.init frames (fun i -> float i / 100.0)) (Array.init mel.Length float) rounded

/// Labels above the given x positions (at height y), one legend entry.
let labels (name: string) (color: string) (xs: float[]) (y: float) (texts: string[]) : JsonNode =
    jobj [ "type", "scatter"; "mode", "text"; "name", name; "textfont", jobj [ "color", color ]
           "x", PlotlyHtml.numbers xs; "y", PlotlyHtml.numbers (xs |> Array.map (fun _ -> y))
           "text", JsonArray(texts |> Array.map (fun t -> JsonValue.Create t :> JsonNode)) ]

/// A layout with a title, axis titles and a height.
let chartLayout (title: string) (xTitle: string) (yTitle: string) (height: int) : JsonObject =
    jobj [ "title", jobj [ "text", title ]; "height", height
           "xaxis", jobj [ "title", jobj [ "text", xTitle ] ]; "yaxis", jobj [ "title", jobj [ "text", yTitle ] ]
           "legend", jobj [ "orientation", "h" ] ]
