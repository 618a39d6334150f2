module MagnetWhisper.Tests.Charts.PlotlyHtmlTests

// The notebooks' figures: the JSON plotly.js receives is read back with System.Text.Json's reader and compared with
// the values written in each test; the HTML fragment must keep hostile text inside its script and draw into its div.

open System
open System.Text.Json
open System.Text.Json.Nodes
open Expecto
open MagnetWhisper.Core.Charts

/// The figure JSON embedded in a fragment: the text between "var figure = " and the line's closing ";".
let private embeddedFigure (html: string) : JsonDocument =
    let start = html.IndexOf "var figure = " + "var figure = ".Length
    let stop = html.IndexOf(";\n", start)
    JsonDocument.Parse(html.Substring(start, stop - start))

let private occurrences (text: string) (part: string) =
    let rec go (from: int) n =
        match text.IndexOf(part, from, StringComparison.Ordinal) with
        | -1 -> n
        | i -> go (i + part.Length) (n + 1)
    go 0 0

let private trace (name: string) (ys: float[]) : JsonNode =
    let t = JsonObject()
    t.["type"] <- JsonValue.Create "scatter"
    t.["name"] <- JsonValue.Create name
    t.["y"] <- PlotlyHtml.numbers ys
    t

[<Tests>]
let tests =
    testList "plotly html" [
        testProperty "numbers: finite values exactly, every non-finite one as null" <| fun (values: float[]) ->
            let parsed = JsonDocument.Parse((PlotlyHtml.numbers values).ToJsonString()).RootElement
            parsed.GetArrayLength() = values.Length
            && values |> Array.mapi (fun i v ->
                let e = parsed.[i]
                if Double.IsFinite v then e.ValueKind = JsonValueKind.Number && e.GetDouble() = v
                else e.ValueKind = JsonValueKind.Null) |> Array.forall id

        test "rows: one array per row, in order" {
            let parsed = JsonDocument.Parse((PlotlyHtml.rows [| [| 1.0; 2.0 |]; [| 3.5; nan |] |]).ToJsonString()).RootElement
            Expect.equal (parsed.GetArrayLength()) 2 "two rows"
            Expect.equal (parsed.[0].[1].GetDouble()) 2.0 "row 0, column 1"
            Expect.equal (parsed.[1].[0].GetDouble()) 3.5 "row 1, column 0"
            Expect.equal parsed.[1].[1].ValueKind JsonValueKind.Null "NaN becomes null"
        }

        test "the fragment's figure holds the traces in order and the layout" {
            let layout = JsonObject()
            layout.["height"] <- JsonValue.Create 300
            let html = PlotlyHtml.figure "fig-1" [ trace "a" [| 1.0; 2.0 |]; trace "b" [| 0.25 |] ] layout
            use figure = embeddedFigure html
            let data = figure.RootElement.GetProperty "data"
            Expect.equal (data.GetArrayLength()) 2 "two traces"
            Expect.equal (data.[0].GetProperty("name").GetString()) "a" "first trace first"
            Expect.equal (data.[1].GetProperty("y").[0].GetDouble()) 0.25 "second trace's value"
            Expect.equal (figure.RootElement.GetProperty("layout").GetProperty("height").GetInt32()) 300 "the layout"
            Expect.stringContains html "<div id=\"fig-1\"></div>" "the div it draws into"
            Expect.stringContains html "Plotly.newPlot(\"fig-1\"" "plotly draws into that div"
            Expect.stringContains html PlotlyHtml.CdnUrl "where plotly.js comes from when the page lacks it"
        }

        test "text that would close the script stays inside the JSON" {
            let hostile = "</script><script>alert(1)</script> & <b>"
            let layout = JsonObject()
            layout.["title"] <- JsonValue.Create hostile
            let html = PlotlyHtml.figure "f" [ trace hostile [| 1.0 |] ] layout
            Expect.equal (occurrences html "</script>") 1 "only the fragment's own closing tag"
            Expect.isFalse (html.Contains "<b>") "no markup from the figure's text"
            use figure = embeddedFigure html
            Expect.equal (figure.RootElement.GetProperty("layout").GetProperty("title").GetString()) hostile "the title reads back unchanged"
            Expect.equal (figure.RootElement.GetProperty("data").[0].GetProperty("name").GetString()) hostile "so does the trace name"
        }

        test "the caller's nodes are copied, not moved" {
            let t = trace "kept" [| 1.0 |]
            let layout = JsonObject()
            PlotlyHtml.figure "a" [ t ] layout |> ignore
            // A JsonNode has one parent: had the figure taken t, a second figure could not.
            let again = PlotlyHtml.figure "b" [ t ] layout
            use figure = embeddedFigure again
            Expect.equal (figure.RootElement.GetProperty("data").[0].GetProperty("name").GetString()) "kept" "the same trace twice"
        }

        test "an element id that could break out of its attribute is refused" {
            for bad in [ ""; "a\"b"; "a b"; "x<y" ] do
                Expect.throwsT<ArgumentException> (fun () -> PlotlyHtml.figure bad [] (JsonObject()) |> ignore) $"id '{bad}'"
        }

        test "library: plotly.js in one script element, whatever its text" {
            let js = "var s = \"</script>\"; var t = '</SCRIPT >';"
            let html = PlotlyHtml.library js
            Expect.equal (occurrences (html.ToLowerInvariant()) "</script") 1 "only the element's own closing tag"
            Expect.isTrue (html.StartsWith "<script" && html.EndsWith "</script>") "one element"
            Expect.throwsT<ArgumentException> (fun () -> PlotlyHtml.library " " |> ignore) "empty plotly.js"
        }
    ]
